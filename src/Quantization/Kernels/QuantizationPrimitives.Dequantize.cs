using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>Dequantizes int8 values with one scale and zero point: <c>(q - zeroPoint) * scale</c> in float (ONNX DequantizeLinear).</summary>
    /// <param name="source">The quantized values.</param>
    /// <param name="destination">Receives the real values; must have the source's length.</param>
    /// <param name="scale">The scale; finite and not negative.</param>
    /// <param name="zeroPoint">The zero point.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scale is negative or not finite.</exception>
    public static void Dequantize(ReadOnlySpan<sbyte> source, Span<float> destination, float scale, sbyte zeroPoint = 0) =>
        DequantizeTensor(MemoryMarshal.AsBytes(source), destination, scale, zeroPoint, signed: true);

    /// <summary>Dequantizes uint8 values with one scale and zero point: <c>(q - zeroPoint) * scale</c> in float (ONNX DequantizeLinear).</summary>
    /// <param name="source">The quantized values.</param>
    /// <param name="destination">Receives the real values; must have the source's length.</param>
    /// <param name="scale">The scale; finite and not negative.</param>
    /// <param name="zeroPoint">The zero point.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scale is negative or not finite.</exception>
    public static void Dequantize(ReadOnlySpan<byte> source, Span<float> destination, float scale, byte zeroPoint) =>
        DequantizeTensor(source, destination, scale, zeroPoint, signed: false);

    private static void DequantizeTensor(ReadOnlySpan<byte> source, Span<float> destination, float scale, int zeroPoint, bool signed)
    {
        ValidateLengths(source.Length, destination.Length, nameof(destination));
        ValidateScale(scale, allowZero: true, nameof(scale));
        DequantizeLanes(source, destination, new UniformParameters(scale, zeroPoint), signed);
    }

    /// <summary>Dequantizes a run; bytes are two's complement int8 when <paramref name="signed"/>, else uint8.</summary>
    /// <remarks>
    /// Signed bytes are flipped to unsigned (q + 128, by xor 0x80) and the zero point is biased by 128, so one
    /// zero-extending widen serves both types; (q + 128) - (zeroPoint + 128) is exactly q - zeroPoint.
    /// </remarks>
    internal static void DequantizeLanes<TParameters>(ReadOnlySpan<byte> source, Span<float> destination, TParameters p, bool signed)
        where TParameters : ILaneParameters, allows ref struct
    {
        ref byte src = ref MemoryMarshal.GetReference(source);
        ref float dst = ref MemoryMarshal.GetReference(destination);
        nuint length = (nuint)source.Length;
        byte flip = signed ? (byte)0x80 : (byte)0;
        int bias = signed ? 128 : 0;

        if (Vector512.IsHardwareAccelerated && length >= (nuint)Vector512<byte>.Count)
        {
            Vector512<int> bias512 = Vector512.Create(bias);
            nuint last = length - (nuint)Vector512<byte>.Count;
            for (nuint i = 0, step = FirstStep(ref dst, Vector512<byte>.Count, Vector512<byte>.Count); ; i = Math.Min(i + step, last), step = (nuint)Vector512<byte>.Count)
            {
                (Vector512<ushort> low, Vector512<ushort> high) = Vector512.Widen(Vector512.LoadUnsafe(ref src, i) ^ Vector512.Create(flip));
                (Vector512<uint> q0, Vector512<uint> q1) = Vector512.Widen(low);
                (Vector512<uint> q2, Vector512<uint> q3) = Vector512.Widen(high);
                Lane512(q0, ref dst, i, p, bias512);
                Lane512(q1, ref dst, i + 16, p, bias512);
                Lane512(q2, ref dst, i + 32, p, bias512);
                Lane512(q3, ref dst, i + 48, p, bias512);
                if (i == last)
                {
                    return;
                }
            }
        }

        if (Vector256.IsHardwareAccelerated && length >= (nuint)Vector256<byte>.Count)
        {
            Vector256<int> bias256 = Vector256.Create(bias);
            nuint last = length - (nuint)Vector256<byte>.Count;
            for (nuint i = 0, step = FirstStep(ref dst, Vector256<byte>.Count, Vector256<byte>.Count); ; i = Math.Min(i + step, last), step = (nuint)Vector256<byte>.Count)
            {
                (Vector256<ushort> low, Vector256<ushort> high) = Vector256.Widen(Vector256.LoadUnsafe(ref src, i) ^ Vector256.Create(flip));
                (Vector256<uint> q0, Vector256<uint> q1) = Vector256.Widen(low);
                (Vector256<uint> q2, Vector256<uint> q3) = Vector256.Widen(high);
                Lane256(q0, ref dst, i, p, bias256);
                Lane256(q1, ref dst, i + 8, p, bias256);
                Lane256(q2, ref dst, i + 16, p, bias256);
                Lane256(q3, ref dst, i + 24, p, bias256);
                if (i == last)
                {
                    return;
                }
            }
        }

        if (Vector128.IsHardwareAccelerated && length >= (nuint)Vector128<byte>.Count)
        {
            Vector128<int> bias128 = Vector128.Create(bias);
            nuint last = length - (nuint)Vector128<byte>.Count;
            for (nuint i = 0, step = FirstStep(ref dst, Vector128<byte>.Count, Vector128<byte>.Count); ; i = Math.Min(i + step, last), step = (nuint)Vector128<byte>.Count)
            {
                (Vector128<ushort> low, Vector128<ushort> high) = Vector128.Widen(Vector128.LoadUnsafe(ref src, i) ^ Vector128.Create(flip));
                (Vector128<uint> q0, Vector128<uint> q1) = Vector128.Widen(low);
                (Vector128<uint> q2, Vector128<uint> q3) = Vector128.Widen(high);
                Lane128(q0, ref dst, i, p, bias128);
                Lane128(q1, ref dst, i + 4, p, bias128);
                Lane128(q2, ref dst, i + 8, p, bias128);
                Lane128(q3, ref dst, i + 12, p, bias128);
                if (i == last)
                {
                    return;
                }
            }
        }

        for (nuint i = 0; i < length; i++)
        {
            byte b = Unsafe.Add(ref src, i);
            int q = signed ? (sbyte)b : b;
            Unsafe.Add(ref dst, i) = (q - p.ZeroPoint(i)) * p.Scale(i);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Lane512<TParameters>(Vector512<uint> biased, ref float dst, nuint i, TParameters p, Vector512<int> bias)
        where TParameters : ILaneParameters, allows ref struct =>
        (Vector512.ConvertToSingle(biased.AsInt32() - (p.ZeroPoint512(i) + bias)) * p.Scale512(i)).StoreUnsafe(ref dst, i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Lane256<TParameters>(Vector256<uint> biased, ref float dst, nuint i, TParameters p, Vector256<int> bias)
        where TParameters : ILaneParameters, allows ref struct =>
        (Vector256.ConvertToSingle(biased.AsInt32() - (p.ZeroPoint256(i) + bias)) * p.Scale256(i)).StoreUnsafe(ref dst, i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Lane128<TParameters>(Vector128<uint> biased, ref float dst, nuint i, TParameters p, Vector128<int> bias)
        where TParameters : ILaneParameters, allows ref struct =>
        (Vector128.ConvertToSingle(biased.AsInt32() - (p.ZeroPoint128(i) + bias)) * p.Scale128(i)).StoreUnsafe(ref dst, i);
}
