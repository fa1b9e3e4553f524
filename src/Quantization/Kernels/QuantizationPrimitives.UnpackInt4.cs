using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>
    /// Unpacks signed 4-bit values stored two a byte (the layout of <see cref="PackInt4"/> and of ONNX int4 tensors): value
    /// <c>i</c> is the two's complement nibble in the low four bits of byte <c>i / 2</c> when <c>i</c> is even, the high
    /// four bits when it is odd.
    /// </summary>
    /// <param name="packed">The packed bytes; exactly <c>(values.Length + 1) / 2</c>. With an odd count, the last byte's high nibble is ignored.</param>
    /// <param name="values">Receives the values, each in [-8, 7]; its length is the count.</param>
    /// <exception cref="ArgumentException"><paramref name="packed"/> has the wrong length.</exception>
    public static void UnpackInt4(ReadOnlySpan<byte> packed, Span<sbyte> values) =>
        UnpackNibbles(packed, MemoryMarshal.AsBytes(values), signed: true, nameof(packed));

    /// <summary>
    /// Unpacks unsigned 4-bit values stored two a byte (the layout of <see cref="PackUInt4"/> and of ONNX uint4 tensors):
    /// value <c>i</c> is the low four bits of byte <c>i / 2</c> when <c>i</c> is even, the high four bits when it is odd.
    /// </summary>
    /// <param name="packed">The packed bytes; exactly <c>(values.Length + 1) / 2</c>. With an odd count, the last byte's high nibble is ignored.</param>
    /// <param name="values">Receives the values, each in [0, 15]; its length is the count.</param>
    /// <exception cref="ArgumentException"><paramref name="packed"/> has the wrong length.</exception>
    public static void UnpackUInt4(ReadOnlySpan<byte> packed, Span<byte> values) =>
        UnpackNibbles(packed, values, signed: false, nameof(packed));

    /// <summary>
    /// Spreads each packed byte over two: widened to a 16-bit lane, <c>(b &amp; 0x0F) | ((b &amp; 0xF0) &lt;&lt; 4)</c> holds the
    /// low nibble in the lane's low byte and the high nibble in its high byte, which is the values' order in memory. A
    /// signed nibble n becomes <c>(n ^ 8) - 8</c>.
    /// </summary>
    private static void UnpackNibbles(ReadOnlySpan<byte> packed, Span<byte> values, bool signed, string packedName)
    {
        ValidatePackedLength(values.Length, packed.Length, packedName);
        ref byte src = ref MemoryMarshal.GetReference(packed);
        ref byte dst = ref MemoryMarshal.GetReference(values);
        int pairs = values.Length / 2, i = 0;
        byte sign = signed ? (byte)8 : (byte)0;

        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<byte> flip = Vector512.Create(sign);
            for (; i <= pairs - Vector512<byte>.Count; i += Vector512<byte>.Count)
            {
                (Vector512<ushort> lower, Vector512<ushort> upper) = Vector512.Widen(Vector512.LoadUnsafe(ref src, (nuint)i));
                ((SpreadLanes(lower).AsByte() ^ flip) - flip).StoreUnsafe(ref dst, (nuint)(2 * i));
                ((SpreadLanes(upper).AsByte() ^ flip) - flip).StoreUnsafe(ref dst, (nuint)((2 * i) + Vector512<byte>.Count));
            }
        }

        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<byte> flip = Vector256.Create(sign);
            for (; i <= pairs - Vector256<byte>.Count; i += Vector256<byte>.Count)
            {
                (Vector256<ushort> lower, Vector256<ushort> upper) = Vector256.Widen(Vector256.LoadUnsafe(ref src, (nuint)i));
                ((SpreadLanes(lower).AsByte() ^ flip) - flip).StoreUnsafe(ref dst, (nuint)(2 * i));
                ((SpreadLanes(upper).AsByte() ^ flip) - flip).StoreUnsafe(ref dst, (nuint)((2 * i) + Vector256<byte>.Count));
            }
        }

        if (Vector128.IsHardwareAccelerated)
        {
            Vector128<byte> flip = Vector128.Create(sign);
            for (; i <= pairs - Vector128<byte>.Count; i += Vector128<byte>.Count)
            {
                (Vector128<ushort> lower, Vector128<ushort> upper) = Vector128.Widen(Vector128.LoadUnsafe(ref src, (nuint)i));
                ((SpreadLanes(lower).AsByte() ^ flip) - flip).StoreUnsafe(ref dst, (nuint)(2 * i));
                ((SpreadLanes(upper).AsByte() ^ flip) - flip).StoreUnsafe(ref dst, (nuint)((2 * i) + Vector128<byte>.Count));
            }
        }

        for (; i < pairs; i++)
        {
            byte b = Unsafe.Add(ref src, i);
            Unsafe.Add(ref dst, 2 * i) = (byte)(((b & 0x0F) ^ sign) - sign);
            Unsafe.Add(ref dst, (2 * i) + 1) = (byte)(((b >> 4) ^ sign) - sign);
        }

        if ((values.Length & 1) != 0)
        {
            Unsafe.Add(ref dst, values.Length - 1) = (byte)(((Unsafe.Add(ref src, pairs) & 0x0F) ^ sign) - sign);
        }
    }

    private static Vector512<ushort> SpreadLanes(Vector512<ushort> lanes) =>
        (lanes & Vector512.Create((ushort)0x000F)) | ((lanes & Vector512.Create((ushort)0x00F0)) << 4);

    private static Vector256<ushort> SpreadLanes(Vector256<ushort> lanes) =>
        (lanes & Vector256.Create((ushort)0x000F)) | ((lanes & Vector256.Create((ushort)0x00F0)) << 4);

    private static Vector128<ushort> SpreadLanes(Vector128<ushort> lanes) =>
        (lanes & Vector128.Create((ushort)0x000F)) | ((lanes & Vector128.Create((ushort)0x00F0)) << 4);
}
