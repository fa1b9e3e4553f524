using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace Quantization;

/// <summary>
/// Reads NumPy <c>.npy</c> files (format versions 1.0, 2.0 and 3.0): bool, float16/32/64 and signed or unsigned
/// 8/16/32/64-bit integers, either byte order, C or Fortran order, as a <see cref="NumPyArray"/> of the file's dtype
/// (<see cref="ReadArray"/>) or converted to float32 (<see cref="Read"/>), in C order. Everything in the file is checked
/// before it is trusted; a malformed file gets an <see cref="InvalidDataException"/> that says what is wrong.
/// </summary>
public static class NpyReader
{
    /// <summary>The largest header accepted (numpy itself writes headers of a few hundred bytes).</summary>
    private const int MaxHeaderLength = 1 << 16;

    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Reads a <c>.npy</c> file, converting its values to float32 (<see cref="NumPyArray.ToSingleArray"/>).</summary>
    /// <param name="path">The file's path.</param>
    /// <returns>The array.</returns>
    /// <exception cref="InvalidDataException">The file is not a well-formed <c>.npy</c> file of a supported dtype.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static NpyArray Read(string path) => ToSingle(ReadArray(path));

    /// <summary>Parses the bytes of a <c>.npy</c> file.</summary>
    /// <param name="file">The whole file.</param>
    /// <returns>The array.</returns>
    /// <exception cref="InvalidDataException">The bytes are not a well-formed <c>.npy</c> file of a supported dtype.</exception>
    public static NpyArray Parse(ReadOnlySpan<byte> file) => ToSingle(ParseArray(file));

    /// <summary>Reads a <c>.npy</c> file keeping its dtype.</summary>
    /// <param name="path">The file's path.</param>
    /// <returns>The array, little-endian and in C order whatever the file's byte order and layout.</returns>
    /// <exception cref="InvalidDataException">The file is not a well-formed <c>.npy</c> file of a supported dtype.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static NumPyArray ReadArray(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        try
        {
            return ParseArray(File.ReadAllBytes(path));
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"'{path}': {e.Message}", e);
        }
    }

    /// <summary>Parses the bytes of a <c>.npy</c> file keeping its dtype.</summary>
    /// <param name="file">The whole file.</param>
    /// <returns>The array, little-endian and in C order whatever the file's byte order and layout.</returns>
    /// <exception cref="InvalidDataException">The bytes are not a well-formed <c>.npy</c> file of a supported dtype, or a bool element is neither 0 nor 1.</exception>
    public static NumPyArray ParseArray(ReadOnlySpan<byte> file)
    {
        if (file.Length < 10 || !file[..6].SequenceEqual(Magic))
        {
            throw new InvalidDataException("Not a .npy file: the magic string \\x93NUMPY is missing.");
        }

        int major = file[6];
        int prefix = major == 1 ? 10 : 12;
        if (major is not (1 or 2 or 3) || file.Length < prefix)
        {
            throw new InvalidDataException(FormattableString.Invariant($"Unsupported .npy format version {major}.{file[7]} or truncated preamble."));
        }

        long headerLength = major == 1 ? BinaryPrimitives.ReadUInt16LittleEndian(file[8..]) : BinaryPrimitives.ReadUInt32LittleEndian(file[8..]);
        if (headerLength > MaxHeaderLength || prefix + headerLength > file.Length)
        {
            throw new InvalidDataException(FormattableString.Invariant($"The header claims {headerLength} bytes but the file has {file.Length - prefix} after the preamble (limit {MaxHeaderLength})."));
        }

        string header = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetString(file.Slice(prefix, (int)headerLength));
        (string descr, bool fortran, int[] shape) = ParseHeader(header);
        (NpyDataType type, bool bigEndian) = Dtype(descr);
        int itemSize = NumPyArray.ElementSizeOf(type);
        long count = NumPyArray.CheckedLength(shape, itemSize)
            ?? throw new InvalidDataException($"The shape ({string.Join(", ", shape)}) is larger than an array can hold.");

        ReadOnlySpan<byte> body = file[(prefix + (int)headerLength)..];
        if (body.Length != count * itemSize)
        {
            throw new InvalidDataException(FormattableString.Invariant($"The header describes {count} values of {itemSize} bytes ({count * itemSize} bytes) but {body.Length} bytes follow it."));
        }

        byte[] data = body.ToArray();
        if (bigEndian && itemSize > 1)
        {
            for (int i = 0; i < data.Length; i += itemSize)
            {
                data.AsSpan(i, itemSize).Reverse();
            }
        }

        if (fortran && shape.Length > 1)
        {
            data = ToRowMajor(data, shape, itemSize);
        }

        int bad = NumPyArray.FirstNonBoolean(type, data);
        if (bad >= 0)
        {
            throw new InvalidDataException(FormattableString.Invariant($"Bool element {bad} (in memory order) is {data[bad]}, not 0 or 1."));
        }

        return new NumPyArray(type, shape, data, validate: false);
    }

    /// <summary>Parses numpy's header dict: <c>{'descr': '&lt;f4', 'fortran_order': False, 'shape': (3, 4), }</c>.</summary>
    private static (string Descr, bool Fortran, int[] Shape) ParseHeader(string header)
    {
        string text = header.TrimEnd('\n', ' ', '\0');
        if (!text.StartsWith('{') || !text.EndsWith('}'))
        {
            throw new InvalidDataException($"The header is not a dict literal: {Quote(header)}.");
        }

        string? descr = null;
        bool? fortran = null;
        int[]? shape = null;
        int position = 1;
        while (true)
        {
            SkipSpaces(text, ref position);
            if (Peek(text, position) == '}')
            {
                break;
            }

            string key = ReadQuoted(text, ref position);
            SkipSpaces(text, ref position);
            Expect(text, ref position, ':');
            SkipSpaces(text, ref position);
            switch (key)
            {
                case "descr" when descr is null:
                    descr = ReadQuoted(text, ref position);
                    break;
                case "fortran_order" when fortran is null:
                    fortran = ReadBoolean(text, ref position);
                    break;
                case "shape" when shape is null:
                    shape = ReadShape(text, ref position);
                    break;
                default:
                    throw new InvalidDataException($"Unexpected or repeated key '{key}' in the header {Quote(header)}.");
            }

            SkipSpaces(text, ref position);
            if (Peek(text, position) == ',')
            {
                position++;
            }
            else if (Peek(text, position) != '}')
            {
                throw new InvalidDataException($"Expected ',' or '}}' at {position} in the header {Quote(header)}.");
            }
        }

        if (descr is null || fortran is null || shape is null)
        {
            throw new InvalidDataException($"The header lacks 'descr', 'fortran_order' or 'shape': {Quote(header)}.");
        }

        return (descr, fortran.Value, shape);
    }

    /// <summary>The data type and byte order of numpy's type string: a byte-order mark (&lt; &gt; | =) and a type code.</summary>
    private static (NpyDataType Type, bool BigEndian) Dtype(string descr)
    {
        if (descr.Length < 3 || descr[0] is not ('<' or '>' or '|' or '='))
        {
            throw new InvalidDataException($"Unsupported dtype '{descr}'.");
        }

        NpyDataType type = descr[1..] switch
        {
            "b1" => NpyDataType.Bool,
            "i1" => NpyDataType.Int8,
            "u1" => NpyDataType.UInt8,
            "i2" => NpyDataType.Int16,
            "u2" => NpyDataType.UInt16,
            "i4" => NpyDataType.Int32,
            "u4" => NpyDataType.UInt32,
            "i8" => NpyDataType.Int64,
            "u8" => NpyDataType.UInt64,
            "f2" => NpyDataType.Float16,
            "f4" => NpyDataType.Float32,
            "f8" => NpyDataType.Float64,
            _ => throw new InvalidDataException($"Unsupported dtype '{descr}' (supported: bool, float16/32/64 and 8 to 64-bit integers)."),
        };
        return (type, descr[0] == '>');
    }

    /// <summary>Reorders a column-major array of <paramref name="itemSize"/>-byte elements into row-major order.</summary>
    private static byte[] ToRowMajor(byte[] columnMajor, int[] shape, int itemSize)
    {
        byte[] rowMajor = new byte[columnMajor.Length];
        int[] index = new int[shape.Length];
        for (int i = 0; i < columnMajor.Length / itemSize; i++)
        {
            // i walks the column-major order: the first index varies fastest.
            int target = 0;
            for (int d = 0; d < shape.Length; d++)
            {
                target = (target * shape[d]) + index[d];
            }

            columnMajor.AsSpan(i * itemSize, itemSize).CopyTo(rowMajor.AsSpan(target * itemSize));
            for (int d = 0; d < shape.Length && ++index[d] == shape[d]; d++)
            {
                index[d] = 0;
            }
        }

        return rowMajor;
    }

    private static int[] ReadShape(string text, ref int position)
    {
        Expect(text, ref position, '(');
        List<int> dims = [];
        while (true)
        {
            SkipSpaces(text, ref position);
            if (Peek(text, position) == ')')
            {
                position++;
                return [.. dims];
            }

            int start = position;
            while (position < text.Length && char.IsAsciiDigit(text[position]))
            {
                position++;
            }

            if (!int.TryParse(text.AsSpan(start, position - start), NumberStyles.None, CultureInfo.InvariantCulture, out int dim))
            {
                throw new InvalidDataException($"Bad dimension at {start} in the shape of the header: {Quote(text)}.");
            }

            dims.Add(dim);
            SkipSpaces(text, ref position);
            if (Peek(text, position) == ',')
            {
                position++;
            }
            else if (Peek(text, position) != ')')
            {
                throw new InvalidDataException($"Expected ',' or ')' at {position} in the shape of the header: {Quote(text)}.");
            }
        }
    }

    private static bool ReadBoolean(string text, ref int position)
    {
        foreach ((string word, bool value) in new[] { ("True", true), ("False", false) })
        {
            if (string.CompareOrdinal(text, position, word, 0, word.Length) == 0)
            {
                position += word.Length;
                return value;
            }
        }

        throw new InvalidDataException($"Expected True or False at {position} in the header: {Quote(text)}.");
    }

    private static string ReadQuoted(string text, ref int position)
    {
        char quote = Peek(text, position);
        if (quote is not ('\'' or '"'))
        {
            throw new InvalidDataException($"Expected a quoted string at {position} in the header: {Quote(text)}.");
        }

        int end = text.IndexOf(quote, position + 1);
        if (end < 0)
        {
            throw new InvalidDataException($"Unterminated string at {position} in the header: {Quote(text)}.");
        }

        string value = text[(position + 1)..end];
        position = end + 1;
        return value;
    }

    private static void Expect(string text, ref int position, char expected)
    {
        if (Peek(text, position) != expected)
        {
            throw new InvalidDataException($"Expected '{expected}' at {position} in the header: {Quote(text)}.");
        }

        position++;
    }

    private static void SkipSpaces(string text, ref int position)
    {
        while (Peek(text, position) == ' ')
        {
            position++;
        }
    }

    /// <summary>The character at <paramref name="position"/>, or '\0' past the end, so that a truncated header fails a check instead of indexing out of range.</summary>
    private static char Peek(string text, int position) => position < text.Length ? text[position] : '\0';

    private static string Quote(string header) => header.Length > 200 ? $"\"{header[..200]}...\"" : $"\"{header}\"";

    private static NpyArray ToSingle(NumPyArray array) => new(array.ToSingleArray(), [.. array.Shape]);
}
