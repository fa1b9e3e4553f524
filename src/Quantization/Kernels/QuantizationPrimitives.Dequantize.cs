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
        bool nonTemporal = UseNonTemporalStores((long)destination.Length * sizeof(float));
        DequantizeLanes(source, destination, new UniformParameters(scale, zeroPoint), signed, nonTemporal);
        FenceNonTemporalStores(nonTemporal);
    }

    /// <summary>Dequantizes a run; bytes are two's complement int8 when <paramref name="signed"/>, else uint8.</summary>
    /// <remarks>
    /// Signed bytes are flipped to unsigned (q + 128, by xor 0x80) and the zero point is biased by 128, so one
    /// zero-extending widen serves both types; (q + 128) - (zeroPoint + 128) is exactly q - zeroPoint. The loops align
    /// their float stores; with <paramref name="nonTemporal"/> the aligned stores bypass the cache (see
    /// <see cref="NonTemporalBytes"/>), and the caller fences once after its last run.
    /// </remarks>
    internal static unsafe void DequantizeLanes<TParameters>(ReadOnlySpan<byte> source, Span<float> destination, TParameters p, bool signed, bool nonTemporal)
        where TParameters : ILaneParameters, allows ref struct
    {
        ref byte src = ref MemoryMarshal.GetReference(source);
        nuint length = (nuint)source.Length;
        byte flip = signed ? (byte)0x80 : (byte)0;
        int bias = signed ? 128 : 0;
        fixed (float* dst = destination)
        {
            if (nonTemporal && Vector512.IsHardwareAccelerated && length >= (nuint)Vector512<byte>.Count * 2 && ((nuint)dst % sizeof(float)) == 0)
            {
                DequantizeStreaming(ref src, dst, length, p, flip, bias);
            }
            else if (Vector512.IsHardwareAccelerated && length >= (nuint)Vector512<byte>.Count)
            {
                Vector512<int> bias512 = Vector512.Create(bias);
                Vector512<int> sharedZero = p.ZeroPoint512(0) + bias512;
                Vector512<float> sharedScale = p.Scale512(0);
                nuint last = length - (nuint)Vector512<byte>.Count;
                for (nuint i = 0, step = FirstStep(ref *dst, Vector512<byte>.Count, Vector512<byte>.Count); ; i = Math.Min(i + step, last), step = (nuint)Vector512<byte>.Count)
                {
                    (Vector512<ushort> low, Vector512<ushort> high) = Vector512.Widen(Vector512.LoadUnsafe(ref src, i) ^ Vector512.Create(flip));
                    (Vector512<uint> q0, Vector512<uint> q1) = Vector512.Widen(low);
                    (Vector512<uint> q2, Vector512<uint> q3) = Vector512.Widen(high);
                    Lane512(q0, dst, i, p, bias512, sharedZero, sharedScale, stream: false);
                    Lane512(q1, dst, i + 16, p, bias512, sharedZero, sharedScale, stream: false);
                    Lane512(q2, dst, i + 32, p, bias512, sharedZero, sharedScale, stream: false);
                    Lane512(q3, dst, i + 48, p, bias512, sharedZero, sharedScale, stream: false);

                    if (i == last)
                    {
                        break;
                    }
                }
            }
            else if (Vector256.IsHardwareAccelerated && length >= (nuint)Vector256<byte>.Count)
            {
                Vector256<int> bias256 = Vector256.Create(bias);
                Vector256<int> sharedZero = p.ZeroPoint256(0) + bias256;
                Vector256<float> sharedScale = p.Scale256(0);
                nuint last = length - (nuint)Vector256<byte>.Count;
                for (nuint i = 0, step = FirstStep(ref *dst, Vector256<byte>.Count, Vector256<byte>.Count); ; i = Math.Min(i + step, last), step = (nuint)Vector256<byte>.Count)
                {
                    (Vector256<ushort> low, Vector256<ushort> high) = Vector256.Widen(Vector256.LoadUnsafe(ref src, i) ^ Vector256.Create(flip));
                    (Vector256<uint> q0, Vector256<uint> q1) = Vector256.Widen(low);
                    (Vector256<uint> q2, Vector256<uint> q3) = Vector256.Widen(high);
                    Lane256(q0, dst, i, p, bias256, sharedZero, sharedScale);
                    Lane256(q1, dst, i + 8, p, bias256, sharedZero, sharedScale);
                    Lane256(q2, dst, i + 16, p, bias256, sharedZero, sharedScale);
                    Lane256(q3, dst, i + 24, p, bias256, sharedZero, sharedScale);

                    if (i == last)
                    {
                        break;
                    }
                }
            }
            else if (Vector128.IsHardwareAccelerated && length >= (nuint)Vector128<byte>.Count)
            {
                Vector128<int> bias128 = Vector128.Create(bias);
                nuint last = length - (nuint)Vector128<byte>.Count;
                for (nuint i = 0, step = FirstStep(ref *dst, Vector128<byte>.Count, Vector128<byte>.Count); ; i = Math.Min(i + step, last), step = (nuint)Vector128<byte>.Count)
                {
                    (Vector128<ushort> low, Vector128<ushort> high) = Vector128.Widen(Vector128.LoadUnsafe(ref src, i) ^ Vector128.Create(flip));
                    (Vector128<uint> q0, Vector128<uint> q1) = Vector128.Widen(low);
                    (Vector128<uint> q2, Vector128<uint> q3) = Vector128.Widen(high);
                    Lane128(q0, dst, i, p, bias128);
                    Lane128(q1, dst, i + 4, p, bias128);
                    Lane128(q2, dst, i + 8, p, bias128);
                    Lane128(q3, dst, i + 12, p, bias128);

                    if (i == last)
                    {
                        break;
                    }
                }
            }
            else
            {
                DequantizeScalar(ref src, dst, 0, length, p, signed);
            }
        }
    }

    /// <summary>
    /// Dequantizes with streaming (non-temporal) stores, which must be aligned and must not overlap ordinary stores to
    /// the same cache lines: the unaligned head and the last few elements go through the scalar path, whole aligned
    /// vectors in between are streamed.
    /// </summary>
    private static unsafe void DequantizeStreaming<TParameters>(ref byte src, float* dst, nuint length, TParameters p, byte flip, int bias)
        where TParameters : ILaneParameters, allows ref struct
    {
        // The partial last line takes ordinary stores, which must first read it; ask for it now, so that the read does
        // not stall the streaming stores queued behind those stores.
        PrefetchLine(ref *dst, length - 1);

        nuint head = ElementsToAlignment(ref *dst, Vector512<byte>.Count);
        DequantizeScalar(ref src, dst, 0, head, p, flip != 0);
        Vector512<int> bias512 = Vector512.Create(bias);
        Vector512<int> sharedZero = p.ZeroPoint512(0) + bias512;
        Vector512<float> sharedScale = p.Scale512(0);
        nuint i = head;
        for (; i + (nuint)Vector512<byte>.Count <= length; i += (nuint)Vector512<byte>.Count)
        {
            (Vector512<ushort> low, Vector512<ushort> high) = Vector512.Widen(Vector512.LoadUnsafe(ref src, i) ^ Vector512.Create(flip));
            (Vector512<uint> q0, Vector512<uint> q1) = Vector512.Widen(low);
            (Vector512<uint> q2, Vector512<uint> q3) = Vector512.Widen(high);
            Lane512(q0, dst, i, p, bias512, sharedZero, sharedScale, stream: true);
            Lane512(q1, dst, i + 16, p, bias512, sharedZero, sharedScale, stream: true);
            Lane512(q2, dst, i + 32, p, bias512, sharedZero, sharedScale, stream: true);
            Lane512(q3, dst, i + 48, p, bias512, sharedZero, sharedScale, stream: true);
        }

        for (; i + (nuint)Vector512<float>.Count <= length; i += (nuint)Vector512<float>.Count)
        {
            Vector512<uint> q = Vector512.WidenLower(Vector512.WidenLower(Vector128.LoadUnsafe(ref src, i).ToVector256().ToVector512() ^ Vector512.Create(flip)));
            Lane512(q, dst, i, p, bias512, sharedZero, sharedScale, stream: true);
        }

        DequantizeScalar(ref src, dst, i, length, p, flip != 0);
    }

    private static unsafe void DequantizeScalar<TParameters>(ref byte src, float* dst, nuint start, nuint end, TParameters p, bool signed)
        where TParameters : ILaneParameters, allows ref struct
    {
        for (nuint i = start; i < end; i++)
        {
            byte b = Unsafe.Add(ref src, i);
            int q = signed ? (sbyte)b : b;
            dst[i] = (q - p.ZeroPoint(i)) * p.Scale(i);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Lane512<TParameters>(Vector512<uint> biased, float* dst, nuint i, TParameters p, Vector512<int> bias, Vector512<int> sharedZero, Vector512<float> sharedScale, bool stream)
        where TParameters : ILaneParameters, allows ref struct
    {
        Vector512<int> zero = TParameters.IsUniform ? sharedZero : p.ZeroPoint512(i) + bias;
        Vector512<float> value = Vector512.ConvertToSingle(biased.AsInt32() - zero) * (TParameters.IsUniform ? sharedScale : p.Scale512(i));
        if (stream)
        {
            Vector512.StoreAlignedNonTemporal(value, dst + i);
        }
        else
        {
            value.Store(dst + i);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Lane256<TParameters>(Vector256<uint> biased, float* dst, nuint i, TParameters p, Vector256<int> bias, Vector256<int> sharedZero, Vector256<float> sharedScale)
        where TParameters : ILaneParameters, allows ref struct
    {
        Vector256<int> zero = TParameters.IsUniform ? sharedZero : p.ZeroPoint256(i) + bias;
        (Vector256.ConvertToSingle(biased.AsInt32() - zero) * (TParameters.IsUniform ? sharedScale : p.Scale256(i))).Store(dst + i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Lane128<TParameters>(Vector128<uint> biased, float* dst, nuint i, TParameters p, Vector128<int> bias)
        where TParameters : ILaneParameters, allows ref struct =>
        (Vector128.ConvertToSingle(biased.AsInt32() - (p.ZeroPoint128(i) + bias)) * p.Scale128(i)).Store(dst + i);
}
