using System.Text.Json;

namespace Quantization;

/// <summary>
/// A safetensors checkpoint: one file, or shards listed by a <c>model.safetensors.index.json</c> whose
/// <c>weight_map</c> names each tensor's shard. Every shard is opened (and checked) up front.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    /// <summary>The usual name of the index of a sharded checkpoint.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>The usual name of a single-file checkpoint.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>Characters no file name may hold on this platform ('\0' and '/' on Unix), which the runtime would refuse with an <see cref="ArgumentException"/>.</summary>
    private static readonly System.Buffers.SearchValues<char> InvalidFileNameChars = System.Buffers.SearchValues.Create(System.IO.Path.GetInvalidFileNameChars());

    private readonly Dictionary<string, SafeTensorsFile> _fileOf;

    private SafeTensorsCheckpoint(List<SafeTensorsFile> files)
    {
        Files = files;
        _fileOf = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        foreach (SafeTensorsFile file in files)
        {
            foreach (SafeTensorInfo tensor in file.Tensors)
            {
                if (!_fileOf.TryAdd(tensor.Name, file))
                {
                    throw new InvalidDataException($"Tensor '{tensor.Name}' is in both '{_fileOf[tensor.Name].Path}' and '{file.Path}'.");
                }
            }
        }
    }

    /// <summary>Gets the files, shards in index order.</summary>
    public IReadOnlyList<SafeTensorsFile> Files { get; }

    /// <summary>Gets every tensor with its file, shard by shard in data order.</summary>
    public IEnumerable<(SafeTensorsFile File, SafeTensorInfo Tensor)> Tensors => Files.SelectMany(f => f.Tensors.Select(t => (f, t)));

    /// <summary>
    /// Opens a checkpoint: a <c>.safetensors</c> file, an index <c>.json</c>, or a directory holding
    /// <see cref="IndexFileName"/> or <see cref="SingleFileName"/>.
    /// </summary>
    /// <param name="path">The file, index or directory.</param>
    /// <returns>The checkpoint; dispose it to close its files.</returns>
    /// <exception cref="InvalidDataException">A file or the index is invalid: a shard outside the index's directory, a tensor missing from its shard or not in the index, a tensor in two shards.</exception>
    /// <exception cref="FileNotFoundException">The path holds no checkpoint.</exception>
    /// <exception cref="IOException">A file cannot be read: a shard the index names does not exist (<see cref="FileNotFoundException"/>) or its name is too long for the file system (<see cref="PathTooLongException"/>).</exception>
    public static SafeTensorsCheckpoint Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path))
        {
            string index = System.IO.Path.Combine(path, IndexFileName), single = System.IO.Path.Combine(path, SingleFileName);
            path = File.Exists(index) ? index : File.Exists(single) ? single : throw new FileNotFoundException($"'{path}' holds neither {IndexFileName} nor {SingleFileName}.", path);
        }

        if (!path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            SafeTensorsFile file = SafeTensorsFile.Open(path);
            return new SafeTensorsCheckpoint([file]);
        }

        Dictionary<string, string> weightMap = ReadIndex(path);
        string directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        List<SafeTensorsFile> files = [];
        try
        {
            foreach (string shard in weightMap.Values.Distinct(StringComparer.Ordinal))
            {
                if (shard.Length == 0 || shard != System.IO.Path.GetFileName(shard) || shard is "." or ".." || shard.AsSpan().IndexOfAny(InvalidFileNameChars) >= 0)
                {
                    throw new InvalidDataException($"'{path}': shard '{NpzReader.Printable(shard)}' is not a file name in the index's directory.");
                }

                SafeTensorsFile file = SafeTensorsFile.Open(System.IO.Path.Combine(directory, shard));
                files.Add(file);
                string[] unlisted = [.. file.Tensors.Where(t => !weightMap.TryGetValue(t.Name, out string? s) || s != shard).Select(t => t.Name).Take(3)];
                if (unlisted.Length > 0)
                {
                    throw new InvalidDataException($"'{path}': shard '{shard}' holds tensors the index does not map to it: {string.Join(", ", unlisted.Select(n => $"'{n}'"))}.");
                }
            }

            SafeTensorsCheckpoint checkpoint = new(files);
            string[] missing = [.. weightMap.Keys.Where(name => !checkpoint._fileOf.ContainsKey(name)).Take(3)];
            if (missing.Length > 0)
            {
                throw new InvalidDataException($"'{path}': the index lists tensors no shard holds: {string.Join(", ", missing.Select(n => $"'{n}'"))}.");
            }

            return checkpoint;
        }
        catch
        {
            files.ForEach(f => f.Dispose());
            throw;
        }
    }

    /// <summary>Gets the file that holds a tensor.</summary>
    /// <param name="name">The tensor's name.</param>
    /// <returns>The file.</returns>
    /// <exception cref="KeyNotFoundException">No file holds it.</exception>
    public SafeTensorsFile FileOf(string name) =>
        _fileOf.TryGetValue(name, out SafeTensorsFile? file) ? file : throw new KeyNotFoundException($"The checkpoint has no tensor '{name}'.");

    /// <summary>Writes an index atomically: <c>metadata.total_size</c> and the <c>weight_map</c>.</summary>
    /// <param name="path">The index file.</param>
    /// <param name="weightMap">Each tensor's shard file name.</param>
    /// <param name="totalSize">The total data bytes of all tensors.</param>
    public static void WriteIndex(string path, IReadOnlyDictionary<string, string> weightMap, long totalSize)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(weightMap);
        AtomicFile.Write(path, stream =>
        {
            using Utf8JsonWriter writer = new(stream, new JsonWriterOptions { Indented = true });
            writer.WriteStartObject();
            writer.WriteStartObject("metadata");
            writer.WriteNumber("total_size", totalSize);
            writer.WriteEndObject();
            writer.WriteStartObject("weight_map");
            foreach ((string name, string shard) in weightMap.OrderBy(e => e.Key, StringComparer.Ordinal))
            {
                writer.WriteString(name, shard);
            }

            writer.WriteEndObject();
            writer.WriteEndObject();
        });
    }

    /// <summary>The file name of shard <paramref name="index"/> (from 0) of <paramref name="count"/>, as Hugging Face names them.</summary>
    /// <param name="index">The shard's index, from 0.</param>
    /// <param name="count">The number of shards.</param>
    /// <returns>For example <c>model-00001-of-00003.safetensors</c>.</returns>
    public static string ShardFileName(int index, int count) => FormattableString.Invariant($"model-{index + 1:00000}-of-{count:00000}.safetensors");

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (SafeTensorsFile file in Files)
        {
            file.Dispose();
        }
    }

    private static Dictionary<string, string> ReadIndex(string path)
    {
        FileInfo info = new(path);
        if (info.Length > SafeTensorsFile.MaxHeaderSize)
        {
            throw new InvalidDataException(FormattableString.Invariant($"'{path}': an index of {info.Length} bytes is larger than {SafeTensorsFile.MaxHeaderSize} accepted."));
        }

        try
        {
            using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 4 });
            if (document.RootElement.ValueKind != JsonValueKind.Object || !document.RootElement.TryGetProperty("weight_map", out JsonElement map) || map.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"'{path}': an index needs a 'weight_map' object.");
            }

            Dictionary<string, string> weightMap = new(StringComparer.Ordinal);
            foreach (JsonProperty entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String || !weightMap.TryAdd(entry.Name, entry.Value.GetString()!))
                {
                    throw new InvalidDataException($"'{path}': weight_map entry '{entry.Name}' is repeated or not a file name string.");
                }
            }

            return weightMap;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}': the index is not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            // A string escape that is no valid UTF-16 (a lone surrogate such as \udc00) fails only when the string is read.
            throw new InvalidDataException($"'{path}': the index has a string that is not valid UTF-16: {e.Message}", e);
        }
    }
}
