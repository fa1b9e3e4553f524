using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>
    /// Observes and quantizes an N-D tensor to int8 in one call (dynamic quantization): computes each parameter pair
    /// from the min and max of the elements it covers, with the scheme's convention, then quantizes them.
    /// </summary>
    /// <param name="source">The real values, row-major.</param>
    /// <param name="shape">The tensor's shape.</param>
    /// <param name="scheme">The scheme; its type must be <see cref="QuantizedType.Int8"/>.</param>
    /// <param name="destination">Receives the quantized values; the source's length.</param>
    /// <param name="scales">Receives the scales, in the layout of <see cref="QuantizationGranularity.GetParameterShape"/>.</param>
    /// <param name="zeroPoints">Receives the zero points, one per scale.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    /// <remarks>
    /// Where each parameter covers one contiguous run (per token, per group along the last axis, per channel of the
    /// first axis: row-wise quantization), each run is observed and quantized while it is still in cache. Other
    /// layouts take two passes.
    /// </remarks>
    /// <exception cref="ArgumentException">The scheme's type is not int8, the shape does not fit the granularity or the data, a span has the wrong length, or (GgmlQ8_0) a block's range overflows the fp16 scale.</exception>
    /// <exception cref="NonFiniteValueException">The source contains NaN or an infinity.</exception>
    public static void QuantizeDynamic(ReadOnlySpan<float> source, ReadOnlySpan<int> shape, QuantizationScheme scheme, Span<sbyte> destination, Span<float> scales, Span<sbyte> zeroPoints, string? tensorName = null) =>
        QuantizeDynamic(source, shape, scheme, MemoryMarshal.AsBytes(destination), scales, zeroPoints, QuantizedType.Int8, tensorName);

    /// <summary>Observes and quantizes an N-D tensor to uint8 in one call (dynamic quantization).</summary>
    /// <param name="source">The real values, row-major.</param>
    /// <param name="shape">The tensor's shape.</param>
    /// <param name="scheme">The scheme; its type must be <see cref="QuantizedType.UInt8"/>.</param>
    /// <param name="destination">Receives the quantized values; the source's length.</param>
    /// <param name="scales">Receives the scales, in the layout of <see cref="QuantizationGranularity.GetParameterShape"/>.</param>
    /// <param name="zeroPoints">Receives the zero points, one per scale.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    /// <exception cref="ArgumentException">The scheme's type is not uint8, the shape does not fit the granularity or the data, or a span has the wrong length.</exception>
    /// <exception cref="NonFiniteValueException">The source contains NaN or an infinity.</exception>
    public static void QuantizeDynamic(ReadOnlySpan<float> source, ReadOnlySpan<int> shape, QuantizationScheme scheme, Span<byte> destination, Span<float> scales, Span<byte> zeroPoints, string? tensorName = null) =>
        QuantizeDynamic(source, shape, scheme, destination, scales, zeroPoints, QuantizedType.UInt8, tensorName);

    private static void QuantizeDynamic<T>(ReadOnlySpan<float> source, ReadOnlySpan<int> shape, QuantizationScheme scheme, Span<byte> destination, Span<float> scales, Span<T> zeroPoints, QuantizedType type, string? tensorName)
        where T : struct, IBinaryInteger<T>
    {
        ArgumentNullException.ThrowIfNull(scheme);
        if (scheme.Type != type)
        {
            throw new ArgumentException($"The scheme quantizes to {scheme.Type} but the destination holds {type}.", nameof(scheme));
        }

        TensorLayout layout = ValidateAxisArguments(source.Length, destination.Length, shape, scheme.Granularity, scales, (ReadOnlySpan<T>)zeroPoints);
        if (zeroPoints.Length != scales.Length)
        {
            throw new ArgumentException(FormattableString.Invariant($"There are {scales.Length} scales but {zeroPoints.Length} zero points."), nameof(zeroPoints));
        }

        int[] pooled = ArrayPool<int>.Shared.Rent(scales.Length);
        try
        {
            Span<int> wide = pooled.AsSpan(0, scales.Length);
            QuantizeDynamicCore(source, layout, scheme, destination, scales, wide, tensorName);
            for (int i = 0; i < wide.Length; i++)
            {
                zeroPoints[i] = T.CreateTruncating(wide[i]);
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(pooled);
        }
    }

    /// <summary>Dynamic quantization on a validated layout; fills one scale and zero point per parameter.</summary>
    internal static void QuantizeDynamicCore(ReadOnlySpan<float> source, in TensorLayout layout, QuantizationScheme scheme, Span<byte> destination, Span<float> scales, Span<int> zeroPoints, string? tensorName, string sourceName = "source")
    {
        if (layout.EachParameterIsOneRun)
        {
            FusedVisitor fused = new(source, destination, scales, zeroPoints, scheme, tensorName, sourceName);
            layout.Visit(ref fused);
            if (layout.ElementCount == 0)
            {
                FillFromRanges(scheme, [], [], scales, zeroPoints, [], sourceName);
            }

            return;
        }

        // Zero is always inside the range every convention maps (ggml's uses |x| only), so zero-initialised
        // accumulators give the same parameters as +/-infinity ones, and an empty tensor gets the (0, 0) range.
        float[] pooled = ArrayPool<float>.Shared.Rent(3 * scales.Length);
        try
        {
            Span<float> mins = pooled.AsSpan(0, scales.Length);
            Span<float> maxs = pooled.AsSpan(scales.Length, scales.Length);
            Span<float> factors = pooled.AsSpan(2 * scales.Length, scales.Length);
            mins.Clear();
            maxs.Clear();
            ObserveRanges(source, layout, mins, maxs, NonFinitePolicy.Throw, tensorName, sourceName);

            FillFromRanges(scheme, mins, maxs, scales, zeroPoints, factors, sourceName);
            QuantizeWithFactors(source, layout, factors, zeroPoints, destination, scheme.Convention, scheme.Type, tensorName, sourceName);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(pooled);
        }
    }

    /// <summary>
    /// Computes parameters (and, when <paramref name="factors"/> is not empty, quantize factors) from ranges; no ranges,
    /// or a range that saw nothing (min &gt; max), stand for (0, 0).
    /// </summary>
    internal static void FillFromRanges(QuantizationScheme scheme, ReadOnlySpan<float> mins, ReadOnlySpan<float> maxs, Span<float> scales, Span<int> zeroPoints, Span<float> factors, string? sourceName)
    {
        for (int p = 0; p < scales.Length; p++)
        {
            bool seen = !mins.IsEmpty && mins[p] <= maxs[p];
            float min = seen ? mins[p] : 0f;
            float max = seen ? maxs[p] : 0f;
            (scales[p], zeroPoints[p]) = scheme.Convention.Compute(min, max, scheme.QuantMin, scheme.QuantMax, scheme.Symmetric, out float factor, sourceName);
            if (!factors.IsEmpty)
            {
                factors[p] = factor;
            }
        }
    }

    /// <summary>
    /// Observes one run (one pass that finds its range and any NaN or infinity), computes its parameters and quantizes it
    /// while it is in cache: two passes over the data in all.
    /// </summary>
    /// <param name="run">The values of one parameter.</param>
    /// <param name="scheme">The scheme.</param>
    /// <param name="destination">Receives the quantized values; the run's length.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    /// <param name="sourceName">The parameter name exceptions report.</param>
    /// <param name="offset">The run's first index in the tensor, added to the index a <see cref="NonFiniteValueException"/> reports.</param>
    /// <returns>The run's scale and zero point.</returns>
    /// <exception cref="NonFiniteValueException">The run contains NaN or an infinity.</exception>
    internal static ScaleAndZeroPoint QuantizeRunDynamic(ReadOnlySpan<float> run, QuantizationScheme scheme, Span<byte> destination, string? tensorName, string sourceName, long offset)
    {
        if (MinMaxCore(run, out float min, out float max))
        {
            ThrowIfNonFinite(run, tensorName, sourceName, offset);
        }

        ScaleAndZeroPoint pair = scheme.Convention.Compute(min, max, scheme.QuantMin, scheme.QuantMax, scheme.Symmetric, out float factor, sourceName);
        QuantizeLanes(scheme.Convention, run, destination, new UniformParameters(factor, pair.ZeroPoint), scheme.Type);
        return pair;
    }

    /// <summary>Observes one run, computes its parameters and quantizes it while it is in cache.</summary>
    private ref struct FusedVisitor(ReadOnlySpan<float> source, Span<byte> destination, Span<float> scales, Span<int> zeroPoints, QuantizationScheme scheme, string? tensorName, string sourceName) : IRunVisitor
    {
        private readonly ReadOnlySpan<float> _source = source;
        private readonly Span<byte> _destination = destination;
        private readonly Span<float> _scales = scales;
        private readonly Span<int> _zeroPoints = zeroPoints;

        public readonly void Uniform(int start, int length, int parameter)
        {
            ScaleAndZeroPoint pair = QuantizeRunDynamic(_source.Slice(start, length), scheme, _destination.Slice(start, length), tensorName, sourceName, start);
            _scales[parameter] = pair.Scale;
            _zeroPoints[parameter] = pair.ZeroPoint;
        }

        public readonly void PerLane(int start, int length, int firstParameter) =>
            throw new InvalidOperationException("A layout whose parameters each cover one run has no per-lane runs.");
    }
}
