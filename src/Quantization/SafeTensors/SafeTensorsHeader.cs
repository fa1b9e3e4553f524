using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Quantization;

/// <summary>
/// Reads and writes the header of a safetensors file: an 8-byte little-endian length, then that many bytes of JSON
/// mapping each tensor name to its <c>dtype</c>, <c>shape</c> and <c>data_offsets</c> (relative to the end of the
/// header), plus an optional <c>__metadata__</c> object of strings. The header is hostile input: every rule is checked
/// and a violation is an <see cref="InvalidDataException"/> that names the file, the tensor and the problem.
/// </summary>
internal static class SafeTensorsHeader
{
    /// <summary>The size of the length prefix.</summary>
    public const int PrefixSize = 8;

    /// <summary>The key of the metadata object.</summary>
    public const string MetadataKey = "__metadata__";

    /// <summary>The most dimensions a tensor may have.</summary>
    private const int MaxRank = 64;

    /// <summary>Parses and checks a header.</summary>
    /// <param name="json">The header's JSON bytes.</param>
    /// <param name="dataLength">The size of the data section that follows the header.</param>
    /// <param name="file">The file's name, for messages.</param>
    /// <returns>The tensors in file order (by offset) and the metadata.</returns>
    public static (List<SafeTensorInfo> Tensors, Dictionary<string, string> Metadata) Parse(ReadOnlySpan<byte> json, long dataLength, string file)
    {
        List<(string Name, SafeTensorDataType Type, long[] Shape, long Begin, long End)> entries = [];
        Dictionary<string, string> metadata = new(StringComparer.Ordinal);
        HashSet<string> keys = new(StringComparer.Ordinal);
        Utf8JsonReader reader = new(json, new JsonReaderOptions { MaxDepth = 3 });
        try
        {
            Expect(reader.Read() && reader.TokenType == JsonTokenType.StartObject, file, "the header is not a JSON object");
            while (Next(ref reader, file) == JsonTokenType.PropertyName)
            {
                string key = reader.GetString()!;
                Expect(keys.Add(key), file, $"'{key}' appears twice in the header");
                Expect(reader.Read(), file, "the header ends early");
                if (key == MetadataKey)
                {
                    ReadMetadata(ref reader, metadata, file);
                }
                else
                {
                    entries.Add(ReadTensor(ref reader, key, file));
                }
            }

            Expect(!reader.Read(), file, "the header has content after its JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{file}': the header is not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidDataException($"'{file}': the header is not valid JSON or UTF-8: {e.Message}", e);
        }

        // The tensors must tile the data section exactly: in offset order, each starts where the last ended.
        entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long position = 0;
        List<SafeTensorInfo> tensors = new(entries.Count);
        foreach ((string name, SafeTensorDataType type, long[] shape, long begin, long end) in entries)
        {
            Expect(begin <= dataLength && end <= dataLength, file, FormattableString.Invariant($"tensor '{name}' has data_offsets [{begin}, {end}] past the end of the data ({dataLength} bytes)"));
            Expect(begin >= position, file, FormattableString.Invariant($"tensor '{name}' at [{begin}, {end}] overlaps the tensor before it, which ends at {position}"));
            Expect(begin == position, file, FormattableString.Invariant($"there is a gap of {begin - position} bytes before tensor '{name}' at {begin}"));
            tensors.Add(new SafeTensorInfo(name, type, shape, begin, end - begin));
            position = end;
        }

        Expect(position == dataLength, file, FormattableString.Invariant($"the tensors end at {position} but the data section has {dataLength} bytes"));
        return (tensors, metadata);
    }

    /// <summary>Serializes a header for tensors stored one after another in the given order, padded with spaces to a multiple of 8 bytes.</summary>
    public static byte[] Write(IEnumerable<(string Name, SafeTensorDataType Type, IReadOnlyList<long> Shape, long Length)> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using MemoryStream buffer = new();
        using (Utf8JsonWriter writer = new(buffer))
        {
            writer.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                writer.WriteStartObject(MetadataKey);
                foreach ((string key, string value) in metadata)
                {
                    writer.WriteString(key, value);
                }

                writer.WriteEndObject();
            }

            long offset = 0;
            foreach ((string name, SafeTensorDataType type, IReadOnlyList<long> shape, long bytes) in tensors)
            {
                writer.WriteStartObject(name);
                writer.WriteString("dtype", type.HeaderName());
                writer.WriteStartArray("shape");
                foreach (long dim in shape)
                {
                    writer.WriteNumberValue(dim);
                }

                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(offset);
                writer.WriteNumberValue(offset + bytes);
                writer.WriteEndArray();
                writer.WriteEndObject();
                offset += bytes;
            }

            writer.WriteEndObject();
        }

        int length = (int)buffer.Length;
        int padded = (length + 7) & ~7;
        byte[] header = new byte[PrefixSize + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)padded);
        buffer.GetBuffer().AsSpan(0, length).CopyTo(header.AsSpan(PrefixSize));
        header.AsSpan(PrefixSize + length).Fill((byte)' ');
        return header;
    }

    /// <summary>The byte count of a tensor of a type and shape, or an exception when the product overflows.</summary>
    public static long ByteCount(SafeTensorDataType type, IReadOnlyList<long> shape, string name)
    {
        Int128 count = type.ElementSize();
        foreach (long dim in shape)
        {
            if (dim < 0)
            {
                throw new ArgumentException(FormattableString.Invariant($"Tensor '{name}' has a negative dimension ({dim})."), nameof(shape));
            }

            count *= dim;
            if (count > long.MaxValue)
            {
                throw new ArgumentException($"Tensor '{name}' has shape [{string.Join(", ", shape)}], more bytes than a file can hold.", nameof(shape));
            }
        }

        return (long)count;
    }

    private static void ReadMetadata(ref Utf8JsonReader reader, Dictionary<string, string> metadata, string file)
    {
        Expect(reader.TokenType == JsonTokenType.StartObject, file, $"'{MetadataKey}' is not an object");
        while (Next(ref reader, file) == JsonTokenType.PropertyName)
        {
            string key = reader.GetString()!;
            Expect(reader.Read() && reader.TokenType == JsonTokenType.String, file, $"metadata '{key}' is not a string");
            Expect(metadata.TryAdd(key, reader.GetString()!), file, $"metadata '{key}' appears twice");
        }
    }

    private static (string, SafeTensorDataType, long[], long, long) ReadTensor(ref Utf8JsonReader reader, string name, string file)
    {
        Expect(reader.TokenType == JsonTokenType.StartObject, file, $"tensor '{name}' is not an object");
        string? dtype = null;
        long[]? shape = null, offsets = null;
        while (Next(ref reader, file) == JsonTokenType.PropertyName)
        {
            string property = reader.GetString()!;
            Expect(reader.Read(), file, "the header ends early");
            switch (property)
            {
                case "dtype" when dtype is null:
                    Expect(reader.TokenType == JsonTokenType.String, file, $"tensor '{name}' has a dtype that is not a string");
                    dtype = reader.GetString()!;
                    break;
                case "shape" when shape is null:
                    shape = ReadIntegers(ref reader, name, property, file);
                    break;
                case "data_offsets" when offsets is null:
                    offsets = ReadIntegers(ref reader, name, property, file);
                    break;
                default:
                    throw new InvalidDataException($"'{file}': tensor '{name}' has an unexpected or repeated field '{property}'.");
            }
        }

        Expect(dtype is not null && shape is not null && offsets is not null, file, $"tensor '{name}' lacks one of dtype, shape and data_offsets");
        Expect(SafeTensorDataTypeExtensions.TryParse(dtype!, out SafeTensorDataType type), file, $"tensor '{name}' has unknown dtype '{dtype}'");
        Expect(shape!.Length <= MaxRank, file, FormattableString.Invariant($"tensor '{name}' has {shape.Length} dimensions, more than {MaxRank}"));
        Expect(offsets!.Length == 2 && offsets[0] <= offsets[1], file, $"tensor '{name}' has data_offsets [{string.Join(", ", offsets)}], not [begin, end] with begin <= end");
        long bytes;
        try
        {
            bytes = ByteCount(type, shape, name);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{file}': {e.Message}", e);
        }

        Expect(bytes == offsets[1] - offsets[0], file, FormattableString.Invariant($"tensor '{name}' is {dtype} [{string.Join(", ", shape)}] ({bytes} bytes) but its data_offsets [{offsets[0]}, {offsets[1]}] hold {offsets[1] - offsets[0]}"));
        return (name, type, shape, offsets[0], offsets[1]);
    }

    private static long[] ReadIntegers(ref Utf8JsonReader reader, string name, string property, string file)
    {
        Expect(reader.TokenType == JsonTokenType.StartArray, file, $"tensor '{name}' has a {property} that is not an array");
        List<long> values = [];
        while (Next(ref reader, file) == JsonTokenType.Number)
        {
            Expect(reader.TryGetInt64(out long value) && value >= 0, file, string.Create(CultureInfo.InvariantCulture, $"tensor '{name}' has {property} value {Encoding.UTF8.GetString(reader.ValueSpan)}, not a non-negative 64-bit integer"));
            values.Add(value);
            Expect(values.Count <= MaxRank, file, FormattableString.Invariant($"tensor '{name}' has more than {MaxRank} {property} values"));
        }

        Expect(reader.TokenType == JsonTokenType.EndArray, file, $"tensor '{name}' has a {property} with a value that is not a number");
        return [.. values];
    }

    /// <summary>Reads the next token, which must exist.</summary>
    private static JsonTokenType Next(ref Utf8JsonReader reader, string file)
    {
        Expect(reader.Read(), file, "the header ends early");
        return reader.TokenType;
    }

    private static void Expect(bool condition, string file, string problem)
    {
        if (!condition)
        {
            throw new InvalidDataException($"'{file}': {problem}.");
        }
    }
}
