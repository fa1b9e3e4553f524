using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>How far ahead, in elements, the quantize kernels prefetch their source: 16 KiB.</summary>
    private const nuint PrefetchDistance = 4096;

    /// <summary>Quantizes values to int8 with one scale and zero point (ONNX QuantizeLinear, per tensor).</summary>
    /// <param name="source">The real values.</param>
    /// <param name="destination">Receives <c>clamp(round(x / scale) + zeroPoint, -128, 127)</c>; must have the source's length.</param>
    /// <param name="scale">The scale: finite and positive (zero is allowed for conventions that multiply by the reciprocal, and maps everything to the zero point).</param>
    /// <param name="zeroPoint">The zero point.</param>
    /// <param name="convention">The numeric convention (rounding, division or reciprocal); <see cref="NumericConvention.Onnx"/> when <see langword="null"/>.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scale is not valid.</exception>
    /// <exception cref="NonFiniteValueException">The source contains NaN or an infinity.</exception>
    public static void Quantize(ReadOnlySpan<float> source, Span<sbyte> destination, float scale, sbyte zeroPoint = 0, NumericConvention? convention = null, string? tensorName = null) =>
        QuantizeTensor(source, MemoryMarshal.AsBytes(destination), scale, zeroPoint, QuantizedType.Int8, convention, tensorName);

    /// <summary>Quantizes values to uint8 with one scale and zero point (ONNX QuantizeLinear, per tensor).</summary>
    /// <param name="source">The real values.</param>
    /// <param name="destination">Receives <c>clamp(round(x / scale) + zeroPoint, 0, 255)</c>; must have the source's length.</param>
    /// <param name="scale">The scale: finite and positive (zero is allowed for conventions that multiply by the reciprocal).</param>
    /// <param name="zeroPoint">The zero point.</param>
    /// <param name="convention">The numeric convention; <see cref="NumericConvention.Onnx"/> when <see langword="null"/>.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scale is not valid.</exception>
    /// <exception cref="NonFiniteValueException">The source contains NaN or an infinity.</exception>
    public static void Quantize(ReadOnlySpan<float> source, Span<byte> destination, float scale, byte zeroPoint, NumericConvention? convention = null, string? tensorName = null) =>
        QuantizeTensor(source, destination, scale, zeroPoint, QuantizedType.UInt8, convention, tensorName);

    private static void QuantizeTensor(ReadOnlySpan<float> source, Span<byte> destination, float scale, int zeroPoint, QuantizedType type, NumericConvention? convention, string? tensorName)
    {
        convention ??= NumericConvention.Onnx;
        ValidateLengths(source.Length, destination.Length, nameof(destination));
        ValidateScale(scale, convention.MultipliesByReciprocal, nameof(scale));
        if (QuantizeLanes(convention, source, destination, new UniformParameters(convention.GetQuantizeFactor(scale), zeroPoint), type))
        {
            ThrowIfNonFinite(source, tensorName, nameof(source));
        }
    }

    /// <summary>
    /// Quantizes a run with the convention's arithmetic; <paramref name="parameters"/> hold quantize factors (see
    /// <see cref="NumericConvention.GetQuantizeFactor"/>), not scales. Returns whether the run may hold NaN or an infinity (a
    /// caller confirms with <see cref="ThrowIfNonFinite"/>).
    /// </summary>
    internal static bool QuantizeLanes<TParameters>(NumericConvention convention, ReadOnlySpan<float> source, Span<byte> destination, TParameters parameters, QuantizedType type)
        where TParameters : ILaneParameters, allows ref struct
    {
        float lo = type.GetMinValue();
        float hi = type.GetMaxValue();
        if (!convention.MultipliesByReciprocal)
        {
            return QuantizeLanes<DivideScaling, RoundToEven, TParameters>(source, destination, parameters, lo, hi);
        }

        return convention.Rounding == MidpointRounding.AwayFromZero
            ? QuantizeLanes<MultiplyScaling, RoundAwayFromZero, TParameters>(source, destination, parameters, lo, hi)
            : QuantizeLanes<MultiplyScaling, RoundToEven, TParameters>(source, destination, parameters, lo, hi);
    }

    private static bool QuantizeLanes<TScaling, TRounding, TParameters>(ReadOnlySpan<float> source, Span<byte> destination, TParameters p, float lo, float hi)
        where TScaling : IScaling
        where TRounding : IRounding
        where TParameters : ILaneParameters, allows ref struct
    {
        ref float src = ref MemoryMarshal.GetReference(source);
        ref byte dst = ref MemoryMarshal.GetReference(destination);
        nuint length = (nuint)source.Length;

        // Each block turns four float vectors into one byte vector; the last block overlaps the one before it
        // (quantization is element-wise, so the overlap is written twice with the same bytes).
        if (Vector512.IsHardwareAccelerated && length >= (nuint)Vector512<byte>.Count)
        {
            Vector512<float> lo512 = Vector512.Create(lo), hi512 = Vector512.Create(hi);
            Lanes512 shared = QuantizeOperator.Prepare<TRounding>(p.Scale512(0), p.ZeroPoint512(0), lo512, hi512);
            Vector512<uint> bad = Vector512<uint>.Zero;
            nuint last = length - (nuint)Vector512<byte>.Count;
            for (nuint i = 0, step = FirstStep(ref src, Vector512<byte>.Count, Vector512<byte>.Count); ; i = Math.Min(i + step, last), step = (nuint)Vector512<byte>.Count)
            {
                PrefetchAhead(ref src, i);
                Block512<TScaling, TRounding, TParameters>(ref src, ref dst, i, p, shared, lo512, hi512, ref bad);
                if (i == last)
                {
                    return bad != Vector512<uint>.Zero;
                }
            }
        }

        if (Vector256.IsHardwareAccelerated && length >= (nuint)Vector256<byte>.Count)
        {
            Vector256<float> lo256 = Vector256.Create(lo), hi256 = Vector256.Create(hi);
            Lanes256 shared = QuantizeOperator.Prepare<TRounding>(p.Scale256(0), p.ZeroPoint256(0), lo256, hi256);
            Vector256<uint> bad = Vector256<uint>.Zero;
            nuint last = length - (nuint)Vector256<byte>.Count;
            for (nuint i = 0, step = FirstStep(ref src, Vector256<byte>.Count, Vector256<byte>.Count); ; i = Math.Min(i + step, last), step = (nuint)Vector256<byte>.Count)
            {
                Block256<TScaling, TRounding, TParameters>(ref src, ref dst, i, p, shared, lo256, hi256, ref bad);
                if (i == last)
                {
                    return bad != Vector256<uint>.Zero;
                }
            }
        }

        if (Vector128.IsHardwareAccelerated && length >= (nuint)Vector128<byte>.Count)
        {
            Vector128<float> lo128 = Vector128.Create(lo), hi128 = Vector128.Create(hi);
            Lanes128 shared = QuantizeOperator.Prepare<TRounding>(p.Scale128(0), p.ZeroPoint128(0), lo128, hi128);
            Vector128<uint> bad = Vector128<uint>.Zero;
            nuint last = length - (nuint)Vector128<byte>.Count;
            for (nuint i = 0, step = FirstStep(ref src, Vector128<byte>.Count, Vector128<byte>.Count); ; i = Math.Min(i + step, last), step = (nuint)Vector128<byte>.Count)
            {
                Block128<TScaling, TRounding, TParameters>(ref src, ref dst, i, p, shared, lo128, hi128, ref bad);
                if (i == last)
                {
                    return bad != Vector128<uint>.Zero;
                }
            }
        }

        bool nonFinite = false;
        for (nuint i = 0; i < length; i++)
        {
            float x = Unsafe.Add(ref src, i);
            nonFinite |= !float.IsFinite(x);
            Unsafe.Add(ref dst, i) = (byte)QuantizeOperator.Quantize<TScaling, TRounding>(x, p.Scale(i), p.ZeroPoint(i), lo, hi);
        }

        return nonFinite;
    }

    /// <summary>Quantizes the four vectors of one block; <paramref name="shared"/> serves uniform parameters.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Block512<TScaling, TRounding, TParameters>(ref float src, ref byte dst, nuint i, TParameters p, in Lanes512 shared, Vector512<float> lo, Vector512<float> hi, ref Vector512<uint> bad)
        where TScaling : IScaling
        where TRounding : IRounding
        where TParameters : ILaneParameters, allows ref struct
    {
        Vector512<float> x0 = Vector512.LoadUnsafe(ref src, i);
        Vector512<float> x1 = Vector512.LoadUnsafe(ref src, i + 16);
        Vector512<float> x2 = Vector512.LoadUnsafe(ref src, i + 32);
        Vector512<float> x3 = Vector512.LoadUnsafe(ref src, i + 48);
        bad |= QuantizeOperator.MaybeNonFinite(x0, x1, x2, x3);
        QuantizeOperator.Narrow(
            QuantizeOperator.Quantize<TScaling, TRounding>(x0, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale512(i), p.ZeroPoint512(i), lo, hi)),
            QuantizeOperator.Quantize<TScaling, TRounding>(x1, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale512(i + 16), p.ZeroPoint512(i + 16), lo, hi)),
            QuantizeOperator.Quantize<TScaling, TRounding>(x2, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale512(i + 32), p.ZeroPoint512(i + 32), lo, hi)),
            QuantizeOperator.Quantize<TScaling, TRounding>(x3, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale512(i + 48), p.ZeroPoint512(i + 48), lo, hi))).StoreUnsafe(ref dst, i);
    }

    /// <summary>Quantizes the four vectors of one block; <paramref name="shared"/> serves uniform parameters.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Block256<TScaling, TRounding, TParameters>(ref float src, ref byte dst, nuint i, TParameters p, in Lanes256 shared, Vector256<float> lo, Vector256<float> hi, ref Vector256<uint> bad)
        where TScaling : IScaling
        where TRounding : IRounding
        where TParameters : ILaneParameters, allows ref struct
    {
        Vector256<float> x0 = Vector256.LoadUnsafe(ref src, i);
        Vector256<float> x1 = Vector256.LoadUnsafe(ref src, i + 8);
        Vector256<float> x2 = Vector256.LoadUnsafe(ref src, i + 16);
        Vector256<float> x3 = Vector256.LoadUnsafe(ref src, i + 24);
        bad |= QuantizeOperator.MaybeNonFinite(x0, x1, x2, x3);
        QuantizeOperator.Narrow(
            QuantizeOperator.Quantize<TScaling, TRounding>(x0, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale256(i), p.ZeroPoint256(i), lo, hi)),
            QuantizeOperator.Quantize<TScaling, TRounding>(x1, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale256(i + 8), p.ZeroPoint256(i + 8), lo, hi)),
            QuantizeOperator.Quantize<TScaling, TRounding>(x2, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale256(i + 16), p.ZeroPoint256(i + 16), lo, hi)),
            QuantizeOperator.Quantize<TScaling, TRounding>(x3, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale256(i + 24), p.ZeroPoint256(i + 24), lo, hi))).StoreUnsafe(ref dst, i);
    }

    /// <summary>Quantizes the four vectors of one block; <paramref name="shared"/> serves uniform parameters.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Block128<TScaling, TRounding, TParameters>(ref float src, ref byte dst, nuint i, TParameters p, in Lanes128 shared, Vector128<float> lo, Vector128<float> hi, ref Vector128<uint> bad)
        where TScaling : IScaling
        where TRounding : IRounding
        where TParameters : ILaneParameters, allows ref struct
    {
        Vector128<float> x0 = Vector128.LoadUnsafe(ref src, i);
        Vector128<float> x1 = Vector128.LoadUnsafe(ref src, i + 4);
        Vector128<float> x2 = Vector128.LoadUnsafe(ref src, i + 8);
        Vector128<float> x3 = Vector128.LoadUnsafe(ref src, i + 12);
        bad |= QuantizeOperator.MaybeNonFinite(x0, x1, x2, x3);
        QuantizeOperator.Narrow(
            QuantizeOperator.Quantize<TScaling, TRounding>(x0, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale128(i), p.ZeroPoint128(i), lo, hi)),
            QuantizeOperator.Quantize<TScaling, TRounding>(x1, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale128(i + 4), p.ZeroPoint128(i + 4), lo, hi)),
            QuantizeOperator.Quantize<TScaling, TRounding>(x2, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale128(i + 8), p.ZeroPoint128(i + 8), lo, hi)),
            QuantizeOperator.Quantize<TScaling, TRounding>(x3, TParameters.IsUniform ? shared : QuantizeOperator.Prepare<TRounding>(p.Scale128(i + 12), p.ZeroPoint128(i + 12), lo, hi))).StoreUnsafe(ref dst, i);
    }

    /// <summary>
    /// Asks for the source <see cref="PrefetchDistance"/> elements ahead of a block (the four cache lines of a block of 64
    /// floats). Quantizing is compute-heavy enough that the memory stream stalls while a block is being
    /// computed; prefetching keeps it busy, and in row-wise dynamic quantization it brings the next row into cache
    /// while this one is quantized. The benchmarks show it: without it, dynamic per-channel quantization of a 64 MiB
    /// weight takes about 0.95x the time of copying it, with it about 0.7x. Prefetches never fault, so reading past the
    /// end of the data is harmless (see <see cref="PrefetchLine"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchAhead(ref float source, nuint i)
    {
        PrefetchLine(ref source, i + PrefetchDistance);
        PrefetchLine(ref source, i + PrefetchDistance + 16);
        PrefetchLine(ref source, i + PrefetchDistance + 32);
        PrefetchLine(ref source, i + PrefetchDistance + 48);
    }
}
