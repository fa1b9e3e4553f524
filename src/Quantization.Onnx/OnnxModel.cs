using System.Buffers.Binary;
using System.Globalization;

using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// An ONNX model in memory: its protobuf messages (kept internal: the quantizers edit them, and <see cref="ToByteArray"/>
/// and <see cref="Save"/> write them), where its external data lives, and checked access to its float initializers.
/// Files are hostile input: every size and offset is checked before it is trusted, and failures are an
/// <see cref="InvalidDataException"/> that names the file or tensor and the problem. Saving is atomic.
/// </summary>
public sealed partial class OnnxModel
{
    /// <summary>Characters no path may hold on this platform.</summary>
    private static readonly System.Buffers.SearchValues<char> InvalidPathChars = System.Buffers.SearchValues.Create(Path.GetInvalidPathChars());

    private OnnxModel(ModelProto proto, string? externalDataDirectory)
    {
        Proto = proto;
        ExternalDataDirectory = externalDataDirectory;
    }

    /// <summary>Gets the model's messages; changes to them are what <see cref="Save"/> writes (which never changes them itself).</summary>
    internal ModelProto Proto { get; }

    /// <summary>Gets the directory that external-data locations are relative to, or <see langword="null"/> for a model parsed from bytes without one.</summary>
    public string? ExternalDataDirectory { get; }

    /// <summary>Gets the version of the default (ai.onnx) operator set the model imports, or 0 when it imports none.</summary>
    public long Opset => Proto.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").Select(o => o.Version).DefaultIfEmpty(0).Max();

    /// <summary>Loads a model file; external data is looked up next to it.</summary>
    /// <param name="path">The <c>.onnx</c> file.</param>
    /// <returns>The model.</returns>
    /// <exception cref="InvalidDataException">The file is not a valid ONNX model.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static OnnxModel Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        try
        {
            return Parse(File.ReadAllBytes(path), Path.GetDirectoryName(Path.GetFullPath(path)));
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"'{path}': {e.Message}", e);
        }
    }

    /// <summary>Parses a serialized model.</summary>
    /// <param name="bytes">The serialized <c>ModelProto</c>.</param>
    /// <param name="externalDataDirectory">The directory external-data locations are relative to, if the model has any.</param>
    /// <returns>The model.</returns>
    /// <exception cref="InvalidDataException">The bytes are not a valid ONNX model.</exception>
    public static OnnxModel Parse(ReadOnlySpan<byte> bytes, string? externalDataDirectory = null)
    {
        ModelProto proto;
        try
        {
            proto = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"Not a valid ONNX model (truncated or corrupt protobuf): {e.Message}", e);
        }

        if (proto.Graph is null)
        {
            throw new InvalidDataException("Not a valid ONNX model: it has no graph.");
        }

        CheckGraph(proto.Graph);
        return new OnnxModel(proto, externalDataDirectory);
    }

    /// <summary>
    /// Serializes the model as it is now, e.g. for <c>new InferenceSession(model.ToByteArray())</c>. Tensors stored in
    /// external data files stay there (ONNX Runtime then needs their directory: save the model with <see cref="Save"/> and
    /// load that file instead).
    /// </summary>
    /// <returns>The serialized <c>ModelProto</c>; a model over protobuf's 2 GB limit must be saved with external data instead.</returns>
    public byte[] ToByteArray() => Proto.ToByteArray();

    /// <summary>Makes a deep copy of the model's messages, with the same external-data directory.</summary>
    internal OnnxModel Clone() => new(Proto.Clone(), ExternalDataDirectory);

    /// <summary>Gets an initializer by name.</summary>
    /// <param name="name">The initializer's name.</param>
    /// <returns>The tensor.</returns>
    /// <exception cref="KeyNotFoundException">The graph has no initializer of that name.</exception>
    internal TensorProto GetInitializer(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return Proto.Graph.Initializer.FirstOrDefault(t => t.Name == name)
            ?? throw new KeyNotFoundException($"The graph has no initializer '{name}'.");
    }

    /// <summary>Reads a float32 tensor's values from wherever they are stored: <c>raw_data</c>, <c>float_data</c> or external data.</summary>
    /// <param name="tensor">The tensor (an initializer, or the value of a Constant node).</param>
    /// <returns>The values, row-major.</returns>
    /// <exception cref="InvalidDataException">The tensor is not float32, or its stored bytes do not match its shape, or its external data is missing, out of range or outside the model's directory.</exception>
    internal float[] ReadFloats(TensorProto tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        string name = string.IsNullOrEmpty(tensor.Name) ? "(unnamed)" : tensor.Name;
        if (tensor.DataType != (int)TensorProto.Types.DataType.Float)
        {
            throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' has data type {tensor.DataType}, not FLOAT (1)."));
        }

        long count = ElementCount(tensor, name);
        if (tensor.DataLocation == TensorProto.Types.DataLocation.External)
        {
            return FromBytes(ReadExternal(tensor, name, count * sizeof(float)), name, count);
        }

        if (!tensor.RawData.IsEmpty)
        {
            return FromBytes(tensor.RawData.Span, name, count);
        }

        if (tensor.FloatData.Count != count)
        {
            throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' has shape [{string.Join(", ", tensor.Dims)}] ({count} values) but {tensor.FloatData.Count} in float_data."));
        }

        return [.. tensor.FloatData];
    }

    /// <summary>
    /// Checks that every node input is a graph input, an initializer or another node's output, and that the nodes form
    /// no cycle (Kahn's algorithm), so that later passes may rely on a well-formed graph.
    /// </summary>
    private static void CheckGraph(GraphProto graph)
    {
        Dictionary<string, int> producers = new(StringComparer.Ordinal);
        for (int n = 0; n < graph.Node.Count; n++)
        {
            foreach (string output in graph.Node[n].Output.Where(o => o.Length > 0))
            {
                if (!producers.TryAdd(output, n))
                {
                    throw new InvalidDataException($"Value '{output}' is produced by two nodes ('{NodeName(graph, producers[output])}' and '{NodeName(graph, n)}').");
                }
            }
        }

        HashSet<string> available = new(graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(i => i.Name)), StringComparer.Ordinal);
        int[] waiting = new int[graph.Node.Count];
        List<int>[] consumers = [.. Enumerable.Range(0, graph.Node.Count).Select(_ => new List<int>())];
        for (int n = 0; n < graph.Node.Count; n++)
        {
            foreach (string input in graph.Node[n].Input.Where(i => i.Length > 0))
            {
                if (producers.TryGetValue(input, out int producer))
                {
                    waiting[n]++;
                    consumers[producer].Add(n);
                }
                else if (!available.Contains(input))
                {
                    throw new InvalidDataException($"Input '{input}' of node '{NodeName(graph, n)}' ({graph.Node[n].OpType}) is no graph input, initializer or node output.");
                }
            }
        }

        Queue<int> ready = new(Enumerable.Range(0, graph.Node.Count).Where(n => waiting[n] == 0));
        int sorted = 0;
        while (ready.TryDequeue(out int n))
        {
            sorted++;
            foreach (int consumer in consumers[n])
            {
                if (--waiting[consumer] == 0)
                {
                    ready.Enqueue(consumer);
                }
            }
        }

        if (sorted < graph.Node.Count)
        {
            string[] cycle = [.. Enumerable.Range(0, graph.Node.Count).Where(n => waiting[n] > 0).Take(5).Select(n => $"'{NodeName(graph, n)}'")];
            throw new InvalidDataException($"The graph has a cycle through {graph.Node.Count - sorted} nodes, among them {string.Join(", ", cycle)}.");
        }
    }

    private static string NodeName(GraphProto graph, int index) =>
        string.IsNullOrEmpty(graph.Node[index].Name) ? FormattableString.Invariant($"#{index}") : graph.Node[index].Name;

    private static long ElementCount(TensorProto tensor, string name)
    {
        long count = 1;
        foreach (long dim in tensor.Dims)
        {
            if (dim < 0)
            {
                throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' has a negative dimension ({dim})."));
            }

            count *= dim;
            if (count > Array.MaxLength)
            {
                throw new InvalidDataException($"Tensor '{name}' has shape [{string.Join(", ", tensor.Dims)}], more values than an array can hold.");
            }
        }

        return count;
    }

    private static float[] FromBytes(ReadOnlySpan<byte> bytes, string name, long count)
    {
        if (bytes.Length != count * sizeof(float))
        {
            throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' needs {count * sizeof(float)} bytes for its {count} values but has {bytes.Length}."));
        }

        float[] values = new float[count];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.Slice(i * sizeof(float), sizeof(float)));
        }

        return values;
    }

    private byte[] ReadExternal(TensorProto tensor, string name, long expectedLength)
    {
        ExternalSource source = ResolveExternal(tensor, name, expectedLength);
        byte[] bytes = new byte[source.Length];
        using FileStream stream = new(source.File, FileMode.Open, FileAccess.Read, FileShare.Read);
        stream.Position = source.Offset;
        stream.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>
    /// Finds and checks where an externally stored tensor's bytes are: a file inside <see cref="ExternalDataDirectory"/>
    /// that exists and holds the whole range.
    /// </summary>
    /// <param name="tensor">The tensor, stored externally.</param>
    /// <param name="name">The tensor's name for messages.</param>
    /// <param name="expectedLength">The byte count its shape and type need, or <see langword="null"/> when the type's size is unknown (the range then defaults to the rest of the file).</param>
    private ExternalSource ResolveExternal(TensorProto tensor, string name, long? expectedLength)
    {
        Dictionary<string, string> entries = [];
        foreach (StringStringEntryProto entry in tensor.ExternalData)
        {
            entries[entry.Key] = entry.Value;
        }

        if (!entries.TryGetValue("location", out string? location) || string.IsNullOrEmpty(location))
        {
            throw new InvalidDataException($"Tensor '{name}' is stored externally but names no location.");
        }

        if (location.AsSpan().IndexOfAny(InvalidPathChars) >= 0)
        {
            // The runtime would refuse such a path with an ArgumentException (NUL on Unix).
            throw new InvalidDataException($"Tensor '{name}' is stored in '{location.Replace("\0", "\\0", StringComparison.Ordinal)}', which holds a character no path may hold.");
        }

        if (ExternalDataDirectory is null)
        {
            throw new InvalidDataException($"Tensor '{name}' is stored in '{location}', but the model was parsed without a directory to find it in.");
        }

        string directory = Path.GetFullPath(ExternalDataDirectory);
        string file = Path.GetFullPath(Path.Combine(directory, location));
        if (Path.IsPathRooted(location) || !file.StartsWith(directory.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"Tensor '{name}' is stored in '{location}', outside the model's directory.");
        }

        long offset = Number(entries, "offset", name, 0);
        if (!File.Exists(file))
        {
            throw new InvalidDataException($"Tensor '{name}' is stored in '{location}', which does not exist.");
        }

        long fileLength = new FileInfo(file).Length;
        long length = Number(entries, "length", name, expectedLength ?? Math.Max(0, fileLength - offset));
        if ((expectedLength is long expected && length != expected) || offset > fileLength || length > fileLength - offset)
        {
            string needs = expectedLength is long need ? FormattableString.Invariant($"; its shape needs {need}") : "";
            throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' claims {length} bytes at offset {offset} of '{location}' ({fileLength} bytes){needs}."));
        }

        return new ExternalSource(file, location, offset, length);
    }

    private static long Number(Dictionary<string, string> entries, string key, string name, long fallback)
    {
        if (!entries.TryGetValue(key, out string? text))
        {
            return fallback;
        }

        return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value)
            ? value
            : throw new InvalidDataException($"Tensor '{name}' has external-data {key} '{text}', not a non-negative integer.");
    }

    /// <summary>Where an externally stored tensor's bytes are, checked.</summary>
    /// <param name="File">The full path of the data file.</param>
    /// <param name="Location">The location as the model names it, for messages.</param>
    /// <param name="Offset">The first byte.</param>
    /// <param name="Length">The byte count.</param>
    private readonly record struct ExternalSource(string File, string Location, long Offset, long Length);
}
