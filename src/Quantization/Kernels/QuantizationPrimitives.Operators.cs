using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantization;

/// <summary>How a quantize kernel applies its factor to a value: divide by the scale, or multiply by its reciprocal.</summary>
internal interface IScaling
{
    static abstract float Apply(float x, float factor);

    static abstract Vector128<float> Apply(Vector128<float> x, Vector128<float> factor);

    static abstract Vector256<float> Apply(Vector256<float> x, Vector256<float> factor);

    static abstract Vector512<float> Apply(Vector512<float> x, Vector512<float> factor);
}

/// <summary>How a quantize kernel rounds a scaled value to an integer-valued float.</summary>
internal interface IRounding
{
    static abstract float Round(float x);

    static abstract Vector128<float> Round(Vector128<float> x);

    static abstract Vector256<float> Round(Vector256<float> x);

    static abstract Vector512<float> Round(Vector512<float> x);
}

/// <summary><c>x / scale</c>: ONNX Runtime's QuantizeLinear (MLAS divides, it does not multiply by a reciprocal).</summary>
internal readonly struct DivideScaling : IScaling
{
    public static float Apply(float x, float factor) => x / factor;

    public static Vector128<float> Apply(Vector128<float> x, Vector128<float> factor) => x / factor;

    public static Vector256<float> Apply(Vector256<float> x, Vector256<float> factor) => x / factor;

    public static Vector512<float> Apply(Vector512<float> x, Vector512<float> factor) => x / factor;
}

/// <summary><c>x * (1 / scale)</c>: PyTorch's quantize_val and ggml's quantize_row_q8_0_ref.</summary>
internal readonly struct MultiplyScaling : IScaling
{
    public static float Apply(float x, float factor) => x * factor;

    public static Vector128<float> Apply(Vector128<float> x, Vector128<float> factor) => x * factor;

    public static Vector256<float> Apply(Vector256<float> x, Vector256<float> factor) => x * factor;

    public static Vector512<float> Apply(Vector512<float> x, Vector512<float> factor) => x * factor;
}

/// <summary>Round half to even (<c>nearbyint</c> in the default rounding mode).</summary>
internal readonly struct RoundToEven : IRounding
{
    public static float Round(float x) => MathF.Round(x);

    public static Vector128<float> Round(Vector128<float> x) => Vector128.Round(x);

    public static Vector256<float> Round(Vector256<float> x) => Vector256.Round(x);

    public static Vector512<float> Round(Vector512<float> x) => Vector512.Round(x);
}

/// <summary>Round half away from zero (C's <c>roundf</c>).</summary>
/// <remarks>
/// The vector paths compute <c>trunc(x + copysign(0.49999997, x))</c>: 0.49999997 is the float just below 0.5, so the
/// sum reaches the next integer exactly when |frac(x)| &gt;= 0.5, and values of 2^23 and above (already integers) are
/// unchanged. Infinities stay infinite and NaN stays NaN, as with <see cref="MathF.Round(float, MidpointRounding)"/>.
/// </remarks>
internal readonly struct RoundAwayFromZero : IRounding
{
    private const float JustBelowHalf = 0.49999997f;

    public static float Round(float x) => MathF.Round(x, MidpointRounding.AwayFromZero);

    public static Vector128<float> Round(Vector128<float> x) =>
        Vector128.Truncate(x + Vector128.CopySign(Vector128.Create(JustBelowHalf), x));

    public static Vector256<float> Round(Vector256<float> x) =>
        Vector256.Truncate(x + Vector256.CopySign(Vector256.Create(JustBelowHalf), x));

    public static Vector512<float> Round(Vector512<float> x) =>
        Vector512.Truncate(x + Vector512.CopySign(Vector512.Create(JustBelowHalf), x));
}

/// <summary>The shared steps of quantization: clamp an integer-valued float and narrow it.</summary>
internal static class QuantizeOperator
{
    /// <summary>
    /// Clamps to [lo, hi] the way the vector paths do (<c>maxps</c> then <c>minps</c>: NaN becomes <paramref name="lo"/>)
    /// and converts; the result is always in range, never an undefined cast.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ClampToInt(float value, float lo, float hi)
    {
        value = value > lo ? value : lo;
        value = value < hi ? value : hi;
        return (int)value;
    }

    /// <summary>The scalar quantize step that every vector path reproduces.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Quantize<TScaling, TRounding>(float x, float factor, float zeroPoint, float lo, float hi)
        where TScaling : IScaling
        where TRounding : IRounding =>
        (byte)ClampToInt(TRounding.Round(TScaling.Apply(x, factor)) + zeroPoint, lo, hi);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Quantize<TScaling, TRounding>(Vector128<float> x, Vector128<float> factor, Vector128<float> zeroPoint, Vector128<float> lo, Vector128<float> hi)
        where TScaling : IScaling
        where TRounding : IRounding =>
        Vector128.ConvertToInt32Native(Vector128.MinNative(Vector128.MaxNative(TRounding.Round(TScaling.Apply(x, factor)) + zeroPoint, lo), hi));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Quantize<TScaling, TRounding>(Vector256<float> x, Vector256<float> factor, Vector256<float> zeroPoint, Vector256<float> lo, Vector256<float> hi)
        where TScaling : IScaling
        where TRounding : IRounding =>
        Vector256.ConvertToInt32Native(Vector256.MinNative(Vector256.MaxNative(TRounding.Round(TScaling.Apply(x, factor)) + zeroPoint, lo), hi));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> Quantize<TScaling, TRounding>(Vector512<float> x, Vector512<float> factor, Vector512<float> zeroPoint, Vector512<float> lo, Vector512<float> hi)
        where TScaling : IScaling
        where TRounding : IRounding =>
        Vector512.ConvertToInt32Native(Vector512.MinNative(Vector512.MaxNative(TRounding.Round(TScaling.Apply(x, factor)) + zeroPoint, lo), hi));

    /// <summary>Narrows four vectors of in-range int32 values to one vector of bytes (truncation keeps the low byte).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<byte> Narrow(Vector128<int> a, Vector128<int> b, Vector128<int> c, Vector128<int> d) =>
        Vector128.Narrow(Vector128.Narrow(a, b), Vector128.Narrow(c, d)).AsByte();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Narrow(Vector256<int> a, Vector256<int> b, Vector256<int> c, Vector256<int> d) =>
        Vector256.Narrow(Vector256.Narrow(a, b), Vector256.Narrow(c, d)).AsByte();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<byte> Narrow(Vector512<int> a, Vector512<int> b, Vector512<int> c, Vector512<int> d) =>
        Vector512.Narrow(Vector512.Narrow(a, b), Vector512.Narrow(c, d)).AsByte();

    /// <summary>Accumulates a non-zero pattern when <paramref name="x"/> holds NaN or an infinity (x - x is +0 only for finite x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> NonFinite(Vector512<float> x) => (x - x).AsUInt32();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> NonFinite(Vector256<float> x) => (x - x).AsUInt32();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> NonFinite(Vector128<float> x) => (x - x).AsUInt32();
}

/// <summary>
/// The scale (or quantize factor) and zero point of each element of a run, at every vector width; a run either shares
/// one pair (<see cref="UniformParameters"/>) or has one pair per element (<see cref="PerLaneParameters"/>).
/// </summary>
internal interface ILaneParameters
{
    float Scale(nuint i);

    int ZeroPoint(nuint i);

    Vector128<float> Scale128(nuint i);

    Vector128<int> ZeroPoint128(nuint i);

    Vector256<float> Scale256(nuint i);

    Vector256<int> ZeroPoint256(nuint i);

    Vector512<float> Scale512(nuint i);

    Vector512<int> ZeroPoint512(nuint i);
}

/// <summary>One scale and zero point for every element.</summary>
internal readonly struct UniformParameters(float scale, int zeroPoint) : ILaneParameters
{
    public float Scale(nuint i) => scale;

    public int ZeroPoint(nuint i) => zeroPoint;

    public Vector128<float> Scale128(nuint i) => Vector128.Create(scale);

    public Vector128<int> ZeroPoint128(nuint i) => Vector128.Create(zeroPoint);

    public Vector256<float> Scale256(nuint i) => Vector256.Create(scale);

    public Vector256<int> ZeroPoint256(nuint i) => Vector256.Create(zeroPoint);

    public Vector512<float> Scale512(nuint i) => Vector512.Create(scale);

    public Vector512<int> ZeroPoint512(nuint i) => Vector512.Create(zeroPoint);
}

/// <summary>Element i uses scales[i] and zeroPoints[i] (both at least as long as the run).</summary>
internal readonly ref struct PerLaneParameters(ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints) : ILaneParameters
{
    private readonly ref float _scales = ref MemoryMarshal.GetReference(scales);
    private readonly ref int _zeroPoints = ref MemoryMarshal.GetReference(zeroPoints);

    public float Scale(nuint i) => Unsafe.Add(ref _scales, i);

    public int ZeroPoint(nuint i) => Unsafe.Add(ref _zeroPoints, i);

    public Vector128<float> Scale128(nuint i) => Vector128.LoadUnsafe(ref _scales, i);

    public Vector128<int> ZeroPoint128(nuint i) => Vector128.LoadUnsafe(ref _zeroPoints, i);

    public Vector256<float> Scale256(nuint i) => Vector256.LoadUnsafe(ref _scales, i);

    public Vector256<int> ZeroPoint256(nuint i) => Vector256.LoadUnsafe(ref _zeroPoints, i);

    public Vector512<float> Scale512(nuint i) => Vector512.LoadUnsafe(ref _scales, i);

    public Vector512<int> ZeroPoint512(nuint i) => Vector512.LoadUnsafe(ref _zeroPoints, i);
}
