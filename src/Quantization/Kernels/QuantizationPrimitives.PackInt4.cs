using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

using static System.FormattableString;

namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>
    /// Packs signed 4-bit values two a byte, as ONNX stores int4 tensors: value <c>i</c> goes to byte <c>i / 2</c>, in the
    /// low four bits when <c>i</c> is even and the high four bits when it is odd, as a two's complement nibble; an odd
    /// count leaves the last byte's high nibble zero.
    /// </summary>
    /// <param name="values">The values, each in [-8, 7].</param>
    /// <param name="packed">Receives the packed bytes; exactly <c>(values.Length + 1) / 2</c> of them.</param>
    /// <exception cref="ArgumentException"><paramref name="packed"/> has the wrong length, or a value is outside [-8, 7] (the message names its index; <paramref name="packed"/> may have been partly written).</exception>
    public static void PackInt4(ReadOnlySpan<sbyte> values, Span<byte> packed) =>
        PackNibbles(MemoryMarshal.AsBytes(values), packed, bias: 8, nameof(values), nameof(packed));

    /// <summary>
    /// Packs unsigned 4-bit values two a byte, as ONNX stores uint4 tensors: value <c>i</c> goes to byte <c>i / 2</c>, in
    /// the low four bits when <c>i</c> is even and the high four bits when it is odd; an odd count leaves the last byte's
    /// high nibble zero.
    /// </summary>
    /// <param name="values">The values, each in [0, 15].</param>
    /// <param name="packed">Receives the packed bytes; exactly <c>(values.Length + 1) / 2</c> of them.</param>
    /// <exception cref="ArgumentException"><paramref name="packed"/> has the wrong length, or a value is above 15 (the message names its index; <paramref name="packed"/> may have been partly written).</exception>
    public static void PackUInt4(ReadOnlySpan<byte> values, Span<byte> packed) =>
        PackNibbles(values, packed, bias: 0, nameof(values), nameof(packed));

    /// <summary>The number of bytes that hold <paramref name="count"/> packed 4-bit values.</summary>
    internal static int PackedInt4Length(int count) => (int)(((long)count + 1) / 2);

    internal static void ValidatePackedLength(int count, int packedLength, string paramName)
    {
        if (packedLength != PackedInt4Length(count))
        {
            throw new ArgumentException(Invariant($"{count} 4-bit values pack into {PackedInt4Length(count)} bytes, not {packedLength}."), paramName);
        }
    }

    /// <summary>
    /// Packs bytes whose low nibbles are the values: a value v is in range when <c>(v + bias) &amp; 0xF0</c> is zero
    /// (bias 8 for signed, 0 for unsigned), and its nibble is <c>v &amp; 0x0F</c> either way.
    /// </summary>
    private static void PackNibbles(ReadOnlySpan<byte> values, Span<byte> packed, byte bias, string valuesName, string packedName)
    {
        ValidatePackedLength(values.Length, packed.Length, packedName);
        ref byte src = ref MemoryMarshal.GetReference(values);
        ref byte dst = ref MemoryMarshal.GetReference(packed);
        int pairs = values.Length / 2, i = 0;
        bool bad = false;

        // A vector of values read as 16-bit lanes holds one pair a lane, the even value in the low byte: the packed byte
        // is (lane & 0x0F) | ((lane >> 4) & 0xF0), and the narrowing keeps each lane's low byte.
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<byte> offset = Vector512.Create(bias), high = Vector512.Create((byte)0xF0), flags = Vector512<byte>.Zero;
            for (; i <= pairs - Vector512<byte>.Count; i += Vector512<byte>.Count)
            {
                Vector512<byte> a = Vector512.LoadUnsafe(ref src, (nuint)(2 * i));
                Vector512<byte> b = Vector512.LoadUnsafe(ref src, (nuint)((2 * i) + Vector512<byte>.Count));
                flags |= ((a + offset) | (b + offset)) & high;
                Vector512.Narrow(PackLanes(a.AsUInt16()), PackLanes(b.AsUInt16())).StoreUnsafe(ref dst, (nuint)i);
            }

            bad |= flags != Vector512<byte>.Zero;
        }

        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<byte> offset = Vector256.Create(bias), high = Vector256.Create((byte)0xF0), flags = Vector256<byte>.Zero;
            for (; i <= pairs - Vector256<byte>.Count; i += Vector256<byte>.Count)
            {
                Vector256<byte> a = Vector256.LoadUnsafe(ref src, (nuint)(2 * i));
                Vector256<byte> b = Vector256.LoadUnsafe(ref src, (nuint)((2 * i) + Vector256<byte>.Count));
                flags |= ((a + offset) | (b + offset)) & high;
                Vector256.Narrow(PackLanes(a.AsUInt16()), PackLanes(b.AsUInt16())).StoreUnsafe(ref dst, (nuint)i);
            }

            bad |= flags != Vector256<byte>.Zero;
        }

        if (Vector128.IsHardwareAccelerated)
        {
            Vector128<byte> offset = Vector128.Create(bias), high = Vector128.Create((byte)0xF0), flags = Vector128<byte>.Zero;
            for (; i <= pairs - Vector128<byte>.Count; i += Vector128<byte>.Count)
            {
                Vector128<byte> a = Vector128.LoadUnsafe(ref src, (nuint)(2 * i));
                Vector128<byte> b = Vector128.LoadUnsafe(ref src, (nuint)((2 * i) + Vector128<byte>.Count));
                flags |= ((a + offset) | (b + offset)) & high;
                Vector128.Narrow(PackLanes(a.AsUInt16()), PackLanes(b.AsUInt16())).StoreUnsafe(ref dst, (nuint)i);
            }

            bad |= flags != Vector128<byte>.Zero;
        }

        for (; i < pairs; i++)
        {
            byte even = Unsafe.Add(ref src, 2 * i), odd = Unsafe.Add(ref src, (2 * i) + 1);
            bad |= (((byte)(even + bias) | (byte)(odd + bias)) & 0xF0) != 0;
            Unsafe.Add(ref dst, i) = (byte)((even & 0x0F) | (odd << 4));
        }

        if ((values.Length & 1) != 0)
        {
            byte last = Unsafe.Add(ref src, values.Length - 1);
            bad |= ((byte)(last + bias) & 0xF0) != 0;
            Unsafe.Add(ref dst, pairs) = (byte)(last & 0x0F);
        }

        if (bad)
        {
            ThrowNibbleOutOfRange(values, bias, valuesName);
        }
    }

    private static Vector512<ushort> PackLanes(Vector512<ushort> lanes) =>
        (lanes & Vector512.Create((ushort)0x000F)) | ((lanes >> 4) & Vector512.Create((ushort)0x00F0));

    private static Vector256<ushort> PackLanes(Vector256<ushort> lanes) =>
        (lanes & Vector256.Create((ushort)0x000F)) | ((lanes >> 4) & Vector256.Create((ushort)0x00F0));

    private static Vector128<ushort> PackLanes(Vector128<ushort> lanes) =>
        (lanes & Vector128.Create((ushort)0x000F)) | ((lanes >> 4) & Vector128.Create((ushort)0x00F0));

    private static void ThrowNibbleOutOfRange(ReadOnlySpan<byte> values, byte bias, string paramName)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (((byte)(values[i] + bias) & 0xF0) != 0)
            {
                string value = bias == 0 ? values[i].ToString(System.Globalization.CultureInfo.InvariantCulture) : ((sbyte)values[i]).ToString(System.Globalization.CultureInfo.InvariantCulture);
                string range = bias == 0 ? "[0, 15]" : "[-8, 7]";
                throw new ArgumentException(Invariant($"Value {value} at index {i} is outside the 4-bit range {range}."), paramName);
            }
        }
    }
}
