using System.Buffers.Binary;
using System.Text;

namespace Quantization;

/// <summary>
/// Writes NumPy <c>.npy</c> files byte for byte as <c>numpy.save</c> does (NumPy 1.23 and later): format 1.0, the header dict <c>{'descr': '&lt;f4', 'fortran_order': False, 'shape': (2, 3), }</c>
/// with its keys sorted, followed by 21 minus the length of the first dimension's digits spaces of room to grow, then
/// spaces up to a multiple of 64 bytes counted from the start of the file (at least one) and a newline; then the elements,
/// little-endian, in C order.
/// </summary>
public static class NpyWriter
{
    /// <summary>The room numpy leaves in the header to rewrite the first dimension in place (<c>GROWTH_AXIS_MAX_DIGITS</c>).</summary>
    private const int GrowthAxisMaxDigits = 21;

    /// <summary>The alignment of the data (<c>ARRAY_ALIGN</c>).</summary>
    private const int ArrayAlign = 64;

    /// <summary>The largest number of dimensions numpy reads (<c>NPY_MAXDIMS</c> of numpy 2; numpy 1 reads 32).</summary>
    private const int MaxRank = 64;

    /// <summary>The magic string, the version 1.0 and the 16-bit header length.</summary>
    private const int Prefix = 10;

    /// <summary>Writes a <c>.npy</c> file atomically: through a temporary file renamed over <paramref name="path"/> when complete.</summary>
    /// <param name="path">The file to write.</param>
    /// <param name="array">The array.</param>
    /// <exception cref="ArgumentNullException"><paramref name="array"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="path"/> is empty, or the array has more than 64 dimensions (numpy's limit).</exception>
    /// <exception cref="IOException">The file cannot be written.</exception>
    public static void Write(string path, NumPyArray array)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(array);
        AtomicFile.Write(path, stream => Write(stream, array));
    }

    /// <summary>Writes a <c>.npy</c> file to a stream.</summary>
    /// <param name="stream">The stream, written from its current position.</param>
    /// <param name="array">The array.</param>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> or <paramref name="array"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The array has more than 64 dimensions (numpy's limit).</exception>
    public static void Write(Stream stream, NumPyArray array)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(array);
        if (array.Shape.Count > MaxRank)
        {
            throw new ArgumentException(FormattableString.Invariant($"The array has {array.Shape.Count} dimensions; numpy reads at most {MaxRank}."), nameof(array));
        }

        stream.Write(Header(array));
        stream.Write(array.Bytes);
    }

    /// <summary>The magic string, version, header length and padded header of an array.</summary>
    internal static byte[] Header(NumPyArray array)
    {
        string descr = array.DataType switch
        {
            NpyDataType.Bool => "|b1",
            NpyDataType.Int8 => "|i1",
            NpyDataType.UInt8 => "|u1",
            NpyDataType.Int16 => "<i2",
            NpyDataType.UInt16 => "<u2",
            NpyDataType.Int32 => "<i4",
            NpyDataType.UInt32 => "<u4",
            NpyDataType.Int64 => "<i8",
            NpyDataType.UInt64 => "<u8",
            NpyDataType.Float16 => "<f2",
            NpyDataType.Float32 => "<f4",
            _ => "<f8",
        };

        // Python's repr of a tuple: (), (3,), (2, 3).
        string shape = array.Shape.Count == 1 ? $"({array.Shape[0]},)" : $"({NumPyArray.FormatShape([.. array.Shape])})";
        StringBuilder dict = new($"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        if (array.Shape.Count > 0)
        {
            dict.Append(' ', Math.Max(0, GrowthAxisMaxDigits - NumPyArray.FormatShape([array.Shape[0]]).Length));
        }

        // Version 1.0 stores the header's length in 16 bits: enough for 64 dimensions of 10 digits.
        int padding = ArrayAlign - ((Prefix + dict.Length + 1) % ArrayAlign);
        string header = dict.Append(' ', padding).Append('\n').ToString();
        byte[] bytes = new byte[Prefix + header.Length];
        ReadOnlySpan<byte> magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0];
        magic.CopyTo(bytes);
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)header.Length);
        Encoding.Latin1.GetBytes(header, bytes.AsSpan(Prefix));
        return bytes;
    }
}
