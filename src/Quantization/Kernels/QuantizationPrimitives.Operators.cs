using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>How a quantize kernel applies its factor to a value: divide by the scale, or multiply by its reciprocal.</summary>
internal interface IScaling
{
    static abstract float Apply(float x, float factor);

    static abstract Vector128<float> Apply(Vector128<float> x, Vector128<float> factor);

    static abstract Vector256<float> Apply(Vector256<float> x, Vector256<float> factor);

    static abstract Vector512<float> Apply(Vector512<float> x, Vector512<float> factor);
}

/// <summary>
/// How a quantize kernel rounds a scaled value that is already clamped to [lo - zeroPoint, hi - zeroPoint] (so
/// |y| &lt;= 2^9), and adds the zero point: <c>round(y) + zeroPoint</c> as an int32. The vector paths take the zero point
/// as a precomputed <c>Bias</c>, so that a uniform run computes it once.
/// </summary>
/// <remarks>
/// Clamping before rounding gives the same integers as rounding before clamping, because rounding is monotonic and
/// the bounds are integers; it lets rounding assume a small magnitude.
/// </remarks>
internal interface IRounding
{
    static abstract int RoundToInt(float y, int zeroPoint);

    static abstract Vector128<int> Bias(Vector128<int> zeroPoint);

    static abstract Vector256<int> Bias(Vector256<int> zeroPoint);

    static abstract Vector512<int> Bias(Vector512<int> zeroPoint);

    static abstract Vector128<int> RoundToInt(Vector128<float> y, Vector128<int> bias);

    static abstract Vector256<int> RoundToInt(Vector256<float> y, Vector256<int> bias);

    static abstract Vector512<int> RoundToInt(Vector512<float> y, Vector512<int> bias);
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
/// <remarks>
/// The vector paths add 1.5 * 2^23: for |y| &lt; 2^22 the sum lies in [2^23, 2^24), where floats are the integers, so the
/// addition itself rounds y half to even (1.5 * 2^23 is even), and the integer sits in the low mantissa bits. One
/// integer subtraction then removes the constant's bits and adds the zero point.
/// </remarks>
internal readonly struct RoundToEven : IRounding
{
    private const float Magic = 12_582_912f; // 1.5 * 2^23
    private const int MagicBits = 0x4B40_0000; // BitConverter.SingleToInt32Bits(Magic)

    public static int RoundToInt(float y, int zeroPoint) => (int)MathF.Round(y) + zeroPoint;

    public static Vector128<int> Bias(Vector128<int> zeroPoint) => Vector128.Create(MagicBits) - zeroPoint;

    public static Vector256<int> Bias(Vector256<int> zeroPoint) => Vector256.Create(MagicBits) - zeroPoint;

    public static Vector512<int> Bias(Vector512<int> zeroPoint) => Vector512.Create(MagicBits) - zeroPoint;

    public static Vector128<int> RoundToInt(Vector128<float> y, Vector128<int> bias) => (y + Vector128.Create(Magic)).AsInt32() - bias;

    public static Vector256<int> RoundToInt(Vector256<float> y, Vector256<int> bias) => (y + Vector256.Create(Magic)).AsInt32() - bias;

    public static Vector512<int> RoundToInt(Vector512<float> y, Vector512<int> bias) => (y + Vector512.Create(Magic)).AsInt32() - bias;
}

/// <summary>Round half away from zero (C's <c>roundf</c>).</summary>
/// <remarks>
/// The vector paths truncate <c>y + copysign(0.49999997, y)</c>: 0.49999997 is the float just below 0.5, so the sum
/// reaches the next integer exactly when |frac(y)| &gt;= 0.5 (the sum is exact or rounds the right way for |y| &lt; 2^22).
/// </remarks>
internal readonly struct RoundAwayFromZero : IRounding
{
    private const float JustBelowHalf = 0.49999997f;

    public static int RoundToInt(float y, int zeroPoint) => (int)MathF.Round(y, MidpointRounding.AwayFromZero) + zeroPoint;

    public static Vector128<int> Bias(Vector128<int> zeroPoint) => zeroPoint;

    public static Vector256<int> Bias(Vector256<int> zeroPoint) => zeroPoint;

    public static Vector512<int> Bias(Vector512<int> zeroPoint) => zeroPoint;

    public static Vector128<int> RoundToInt(Vector128<float> y, Vector128<int> bias) =>
        Vector128.ConvertToInt32Native(y + Vector128.CopySign(Vector128.Create(JustBelowHalf), y)) + bias;

    public static Vector256<int> RoundToInt(Vector256<float> y, Vector256<int> bias) =>
        Vector256.ConvertToInt32Native(y + Vector256.CopySign(Vector256.Create(JustBelowHalf), y)) + bias;

    public static Vector512<int> RoundToInt(Vector512<float> y, Vector512<int> bias) =>
        Vector512.ConvertToInt32Native(y + Vector512.CopySign(Vector512.Create(JustBelowHalf), y)) + bias;
}

/// <summary>The shared steps of quantization: scale, clamp, round, add the zero point, narrow.</summary>
internal static class QuantizeOperator
{
    /// <summary>
    /// The scalar quantize step that every vector path reproduces: <c>clamp(round(x op factor) + zeroPoint, lo, hi)</c>,
    /// clamping first (as <c>maxps</c> then <c>minps</c> do: NaN becomes <paramref name="lo"/>), so the result is always in
    /// range and never an undefined cast.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Quantize<TScaling, TRounding>(float x, float factor, int zeroPoint, float lo, float hi)
        where TScaling : IScaling
        where TRounding : IRounding
    {
        float y = TScaling.Apply(x, factor);
        float low = lo - zeroPoint, high = hi - zeroPoint;
        y = y > low ? y : low;
        y = y < high ? y : high;
        return TRounding.RoundToInt(y, zeroPoint);
    }

    /// <summary>
    /// Prepares the per-lane constants of a vector of elements: the factor, the clamp bounds shifted by the zero point,
    /// and the rounding's bias. A uniform run prepares them once, outside its loop.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes128 Prepare<TRounding>(Vector128<float> factor, Vector128<int> zeroPoint, Vector128<float> lo, Vector128<float> hi)
        where TRounding : IRounding
    {
        Vector128<float> shift = Vector128.ConvertToSingle(zeroPoint);
        return new(factor, lo - shift, hi - shift, TRounding.Bias(zeroPoint));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes256 Prepare<TRounding>(Vector256<float> factor, Vector256<int> zeroPoint, Vector256<float> lo, Vector256<float> hi)
        where TRounding : IRounding
    {
        Vector256<float> shift = Vector256.ConvertToSingle(zeroPoint);
        return new(factor, lo - shift, hi - shift, TRounding.Bias(zeroPoint));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes512 Prepare<TRounding>(Vector512<float> factor, Vector512<int> zeroPoint, Vector512<float> lo, Vector512<float> hi)
        where TRounding : IRounding
    {
        Vector512<float> shift = Vector512.ConvertToSingle(zeroPoint);
        return new(factor, lo - shift, hi - shift, TRounding.Bias(zeroPoint));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Quantize<TScaling, TRounding>(Vector128<float> x, in Lanes128 lanes)
        where TScaling : IScaling
        where TRounding : IRounding =>
        TRounding.RoundToInt(Vector128.MinNative(Vector128.MaxNative(TScaling.Apply(x, lanes.Factor), lanes.Low), lanes.High), lanes.Bias);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Quantize<TScaling, TRounding>(Vector256<float> x, in Lanes256 lanes)
        where TScaling : IScaling
        where TRounding : IRounding =>
        TRounding.RoundToInt(Vector256.MinNative(Vector256.MaxNative(TScaling.Apply(x, lanes.Factor), lanes.Low), lanes.High), lanes.Bias);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> Quantize<TScaling, TRounding>(Vector512<float> x, in Lanes512 lanes)
        where TScaling : IScaling
        where TRounding : IRounding =>
        TRounding.RoundToInt(Vector512.MinNative(Vector512.MaxNative(TScaling.Apply(x, lanes.Factor), lanes.Low), lanes.High), lanes.Bias);

    /// <summary>Narrows four vectors of in-range int32 values to one vector of bytes (truncation keeps the low byte).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<byte> Narrow(Vector128<int> a, Vector128<int> b, Vector128<int> c, Vector128<int> d) =>
        Vector128.Narrow(Vector128.Narrow(a, b), Vector128.Narrow(c, d)).AsByte();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Narrow(Vector256<int> a, Vector256<int> b, Vector256<int> c, Vector256<int> d) =>
        Vector256.Narrow(Vector256.Narrow(a, b), Vector256.Narrow(c, d)).AsByte();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<byte> Narrow(Vector512<int> a, Vector512<int> b, Vector512<int> c, Vector512<int> d)
    {
        if (Avx512Vbmi.IsSupported)
        {
            // Two two-source byte permutes (vpermt2b) pick the low byte of every int32 and one insert joins the
            // halves: 3 instructions where the portable two-level Narrow takes 9 (4 vpmovdw, 2 vpmovwb, 3 inserts).
            // The quantize benchmarks run measurably faster with it on this AMD Zen 5; the bytes are the same.
            Vector512<byte> ab = Avx512Vbmi.PermuteVar64x8x2(a.AsByte(), LowBytesOfPair, b.AsByte());
            Vector512<byte> cd = Avx512Vbmi.PermuteVar64x8x2(c.AsByte(), LowBytesOfPair, d.AsByte());
            return Vector512.Create(ab.GetLower(), cd.GetLower());
        }

        return Vector512.Narrow(Vector512.Narrow(a, b), Vector512.Narrow(c, d)).AsByte();
    }

    /// <summary>Byte indices 0, 4, ..., 124 in the lower half: the low byte of each of the 32 int32 lanes of two vectors, in order (the upper half is not used).</summary>
    private static Vector512<byte> LowBytesOfPair => Vector512.CreateSequence((byte)0, (byte)4);

    /// <summary>
    /// Returns a non-zero pattern when any of four vectors may hold NaN or an infinity: s - s is +0 only for finite s,
    /// and the sum of the four is non-finite whenever one of them is. A sum that overflows gives a false alarm, which
    /// the caller's exact scalar scan dismisses.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> MaybeNonFinite(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        Vector512<float> sum = (a + b) + (c + d);
        return (sum - sum).AsUInt32();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> MaybeNonFinite(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        Vector256<float> sum = (a + b) + (c + d);
        return (sum - sum).AsUInt32();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> MaybeNonFinite(Vector128<float> a, Vector128<float> b, Vector128<float> c, Vector128<float> d)
    {
        Vector128<float> sum = (a + b) + (c + d);
        return (sum - sum).AsUInt32();
    }
}

/// <summary>The constants of one vector of quantize lanes (see <see cref="QuantizeOperator.Prepare{TRounding}(Vector128{float}, Vector128{int}, Vector128{float}, Vector128{float})"/>).</summary>
internal readonly record struct Lanes128(Vector128<float> Factor, Vector128<float> Low, Vector128<float> High, Vector128<int> Bias);

/// <summary>The constants of one vector of quantize lanes.</summary>
internal readonly record struct Lanes256(Vector256<float> Factor, Vector256<float> Low, Vector256<float> High, Vector256<int> Bias);

/// <summary>The constants of one vector of quantize lanes.</summary>
internal readonly record struct Lanes512(Vector512<float> Factor, Vector512<float> Low, Vector512<float> High, Vector512<int> Bias);

/// <summary>
/// The scale (or quantize factor) and zero point of each element of a run, at every vector width; a run either shares
/// one pair (<see cref="UniformParameters"/>) or has one pair per element (<see cref="PerLaneParameters"/>).
/// </summary>
internal interface ILaneParameters
{
    /// <summary>Gets whether every element shares one pair, so that kernels can prepare their constants once.</summary>
    static abstract bool IsUniform { get; }

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
    public static bool IsUniform => true;

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

    public static bool IsUniform => false;

    public float Scale(nuint i) => Unsafe.Add(ref _scales, i);

    public int ZeroPoint(nuint i) => Unsafe.Add(ref _zeroPoints, i);

    public Vector128<float> Scale128(nuint i) => Vector128.LoadUnsafe(ref _scales, i);

    public Vector128<int> ZeroPoint128(nuint i) => Vector128.LoadUnsafe(ref _zeroPoints, i);

    public Vector256<float> Scale256(nuint i) => Vector256.LoadUnsafe(ref _scales, i);

    public Vector256<int> ZeroPoint256(nuint i) => Vector256.LoadUnsafe(ref _zeroPoints, i);

    public Vector512<float> Scale512(nuint i) => Vector512.LoadUnsafe(ref _scales, i);

    public Vector512<int> ZeroPoint512(nuint i) => Vector512.LoadUnsafe(ref _zeroPoints, i);
}
