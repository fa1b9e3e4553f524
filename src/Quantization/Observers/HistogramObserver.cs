using System.Runtime.Intrinsics;

using static System.FormattableString;

namespace Quantization;

/// <summary>
/// The shared part of the histogram observers (<see cref="PercentileObserver"/>, <see cref="EntropyObserver"/>,
/// <see cref="MseObserver"/>): a fixed-size histogram of |x| over [0, amax], the signed minimum and maximum, and
/// per-tensor parameters from a clipping threshold that each subclass chooses from the histogram.
/// </summary>
/// <remarks>
/// <para>
/// The histogram. <see cref="BinCount"/> bins (2048 by default) of equal width w = 2^e, where e is the smallest integer
/// with amax &lt; BinCount · 2^e and amax is the largest |x| seen so far. A finite value x is counted in bin
/// <c>floor(|x| / w)</c> (exact: w is a power of two). Only the first <see cref="UsedBinCount"/> bins,
/// n = floor(amax / w) + 1, can hold counts; n is between BinCount / 2 + 1 and BinCount, so the histogram always
/// resolves [0, amax] into at least half its bins. Values before the first non-zero magnitude (all zeros) are
/// counted in bin 0.
/// </para>
/// <para>
/// Widening. When a batch (or a merged observer) raises amax past BinCount · w, e grows by d, and bin j's count
/// moves to bin <c>j &gt;&gt; d</c>: 2^d adjacent bins merge into one, every count moves whole, the total is kept.
/// Since floor(floor(|x| / 2^e) / 2^d) = floor(|x| / 2^(e + d)), the histogram is a function of the observed values
/// only, whatever their order and batching: <see cref="Merge"/> of two observers fed two parts of the data gives
/// exactly the histogram, minimum, maximum and counts of one observer fed all of it, so thresholds and parameters are
/// identical too. The state is O(<see cref="BinCount"/>) whatever the number of values or calls.
/// </para>
/// <para>
/// Parameters. From the threshold t = <see cref="ComputeThreshold"/> (never above amax): a symmetric scheme gets the
/// range [-t, t]; an asymmetric one [min(0, max(min, -t)), max(0, min(max, t))], the observed range clipped to
/// [-t, t] (a post-ReLU tensor gets [0, t]); the scheme's <see cref="NumericConvention"/> then computes the scale and
/// zero point exactly as for <see cref="MinMaxObserver"/>. An observer that saw no finite value, or only zeros, gets the
/// parameters of [0, 0] (scale 1, zero point 0 under ONNX Runtime's convention).
/// </para>
/// <para>
/// Only per-tensor schemes: the histogram is one per tensor. Binning is exact on every path (vector or scalar) and the
/// threshold searches are scalar and sequential in double precision, so thresholds are bit-identical on every SIMD
/// tier. <see cref="Observe"/> allocates nothing; the searches allocate O(<see cref="BinCount"/>). Not thread-safe: use one observer per thread and
/// merge them. A call that throws leaves the observer as it was.
/// </para>
/// </remarks>
public abstract class HistogramObserver : IQuantizationObserver
{
    /// <summary>The default number of bins, as TensorRT's and ONNX Runtime's histogram calibrators.</summary>
    public const int DefaultBinCount = 2048;

    /// <summary>The smallest bin count: at least 129 bins in use, more than the 128 quantized bins of the entropy search.</summary>
    public const int MinBinCount = 256;

    /// <summary>The largest bin count.</summary>
    public const int MaxBinCount = 1 << 20;

    private readonly long[] _counts;
    private int _exponent;
    private bool _hasWidth;
    private bool _observed;
    private float _min = float.PositiveInfinity;
    private float _max = float.NegativeInfinity;
    private float _maxMagnitude;

    private protected HistogramObserver(QuantizationScheme scheme, int binCount, NonFinitePolicy nonFinitePolicy)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        if (scheme.Granularity.Kind != GranularityKind.PerTensor)
        {
            throw new ArgumentException($"Histogram observers keep one histogram per tensor; the scheme {scheme} is {scheme.Granularity}, not PerTensor.", nameof(scheme));
        }

        if (!Enum.IsDefined(nonFinitePolicy))
        {
            throw new ArgumentOutOfRangeException(nameof(nonFinitePolicy), nonFinitePolicy, "Unknown non-finite policy.");
        }

        if (binCount is < MinBinCount or > MaxBinCount)
        {
            throw new ArgumentOutOfRangeException(nameof(binCount), binCount, Invariant($"The bin count must be in [{MinBinCount}, {MaxBinCount}]."));
        }

        Scheme = scheme;
        NonFinitePolicy = nonFinitePolicy;
        _counts = new long[binCount];
    }

    /// <inheritdoc/>
    public QuantizationScheme Scheme { get; }

    /// <summary>Gets what the observer does with NaN and infinities.</summary>
    public NonFinitePolicy NonFinitePolicy { get; }

    /// <inheritdoc/>
    public long ObservedCount { get; private set; }

    /// <summary>Gets the number of NaN and infinite values left out under <see cref="NonFinitePolicy.Skip"/>.</summary>
    public long SkippedCount { get; private set; }

    /// <summary>Gets the number of bins the histogram holds.</summary>
    public int BinCount => _counts.Length;

    /// <summary>Gets the smallest finite value seen (+infinity before any).</summary>
    public float Minimum => _min;

    /// <summary>Gets the largest finite value seen (-infinity before any).</summary>
    public float Maximum => _max;

    /// <summary>Gets amax, the largest |x| seen (0 before any non-zero value).</summary>
    public float MaxMagnitude => _maxMagnitude;

    /// <summary>Gets the bin width w = 2^e (see the remarks), or 0 while every value seen is zero.</summary>
    public double BinWidth => _hasWidth ? Math.ScaleB(1.0, _exponent) : 0.0;

    /// <summary>Gets n = floor(amax / w) + 1, the number of leading bins that can hold counts (1 while every value seen is zero, 0 before any).</summary>
    public int UsedBinCount => _hasWidth ? (int)(_maxMagnitude * Math.ScaleB(1.0, -_exponent)) + 1 : ObservedCount > 0 ? 1 : 0;

    /// <summary>Gets the count of every bin: bin j counts the values with |x| in [j · w, (j + 1) · w).</summary>
    public ReadOnlySpan<long> Counts => _counts;

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The shape is empty, has a negative dimension or does not fit the values.</exception>
    /// <exception cref="NonFiniteValueException">The values contain NaN or an infinity and the policy is <see cref="NonFinitePolicy.Throw"/>.</exception>
    public void Observe(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, string? tensorName = null)
    {
        TensorLayout layout = TensorLayout.Create(shape, Scheme.Granularity, nameof(shape));
        layout.RequireElementCount(values.Length, shape, tensorName, nameof(values));

        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        long skipped = 0;
        if (!values.IsEmpty && QuantizationPrimitives.MinMaxCore(values, out min, out max))
        {
            // The kernel flagged the run: throw for the first bad value, or recompute over the finite ones.
            if (NonFinitePolicy == NonFinitePolicy.Throw)
            {
                QuantizationPrimitives.ThrowIfNonFinite(values, tensorName, nameof(values));
            }

            (min, max, skipped) = QuantizationPrimitives.FiniteMinMax(values);
            (min, max) = (min + 0f, max + 0f); // -0 as +0, as the kernel gives it
        }

        // Nothing has changed yet: a call that throws above leaves the observer as it was.
        _observed = true;
        ObservedCount += values.Length - skipped;
        SkippedCount += skipped;
        if (min > max)
        {
            return; // no finite value
        }

        _min = MathF.Min(_min, min);
        _max = MathF.Max(_max, max);
        Widen(MathF.Max(-min, max));
        if (!_hasWidth)
        {
            _counts[0] += values.Length - skipped; // every value so far is zero
            return;
        }

        Bin(values, _counts, _exponent, skipNonFinite: skipped > 0);
    }

    /// <summary>
    /// Folds another histogram observer's statistics into this one's (the order does not matter): the result is exactly
    /// what one observer fed both observers' data would hold (see the remarks). The other observer may use another
    /// method; it is left unchanged.
    /// </summary>
    /// <param name="other">An observer with the same scheme and bin count.</param>
    /// <exception cref="ArgumentNullException"><paramref name="other"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The schemes or bin counts differ, or <paramref name="other"/> is this observer.</exception>
    public void Merge(HistogramObserver other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (ReferenceEquals(other, this))
        {
            throw new ArgumentException("Cannot merge an observer into itself.", nameof(other));
        }

        if (!Scheme.Equals(other.Scheme) || BinCount != other.BinCount)
        {
            throw new ArgumentException(Invariant($"Cannot merge a {other.GetType().Name} of {other.Scheme} with {other.BinCount} bins into a {GetType().Name} of {Scheme} with {BinCount} bins."), nameof(other));
        }

        if (!other._observed)
        {
            return;
        }

        _observed = true;
        ObservedCount += other.ObservedCount;
        SkippedCount += other.SkippedCount;
        _min = MathF.Min(_min, other._min);
        _max = MathF.Max(_max, other._max);
        Widen(other._maxMagnitude);

        // The other's bins are at most as wide as ours now: bin j lands in j >> d.
        int shift = other._hasWidth ? _exponent - other._exponent : 0;
        for (int j = 0; j < other._counts.Length; j++)
        {
            _counts[Shifted(j, shift)] += other._counts[j];
        }
    }

    /// <summary>Forgets everything observed.</summary>
    public void Reset()
    {
        Array.Clear(_counts);
        (_exponent, _hasWidth, _observed) = (0, false, false);
        (_min, _max, _maxMagnitude) = (float.PositiveInfinity, float.NegativeInfinity, 0f);
        ObservedCount = 0;
        SkippedCount = 0;
    }

    /// <summary>
    /// Computes the clipping threshold t of |x| by the subclass's method, over the <see cref="UsedBinCount"/> bins in use,
    /// and clamps it to amax. It is 0 when no non-zero finite value was seen.
    /// </summary>
    /// <returns>The threshold, in [0, <see cref="MaxMagnitude"/>].</returns>
    /// <exception cref="InvalidOperationException">Nothing has been observed.</exception>
    public float ComputeThreshold()
    {
        if (!_observed)
        {
            throw new InvalidOperationException("The observer has observed nothing; call Observe first.");
        }

        if (!_hasWidth)
        {
            return 0f;
        }

        double threshold = SearchThreshold(_counts.AsSpan(0, UsedBinCount), BinWidth);
        return (float)Math.Min(threshold, _maxMagnitude);
    }

    /// <inheritdoc/>
    /// <remarks>The range comes from <see cref="ComputeThreshold"/> as the class remarks define.</remarks>
    /// <exception cref="InvalidOperationException">Nothing has been observed.</exception>
    /// <exception cref="ArgumentException">(GgmlQ8_0) the threshold overflows the fp16 scale.</exception>
    public QuantizationParameters ComputeParameters()
    {
        (float low, float high) = RangeFor(ComputeThreshold());
        float[] scales = new float[1];
        int[] zeroPoints = new int[1];
        QuantizationPrimitives.FillFromRanges(Scheme, [low], [high], scales, zeroPoints, [], sourceName: null);
        return QuantizationParameters.Own(scales, zeroPoints);
    }

    /// <summary>The range whose parameters threshold <paramref name="threshold"/> gives (see the class remarks).</summary>
    private protected (float Low, float High) RangeFor(float threshold) =>
        Scheme.Symmetric || !(_min <= _max)
            ? (-threshold, threshold)
            : (MathF.Min(0f, MathF.Max(_min, -threshold)), MathF.Max(0f, MathF.Min(_max, threshold)));

    /// <summary>Chooses the threshold from the bins in use (the last is non-empty) of width <paramref name="binWidth"/>.</summary>
    /// <param name="bins">The first <see cref="UsedBinCount"/> counts.</param>
    /// <param name="binWidth">The bin width.</param>
    /// <returns>The threshold; values above amax are clamped by the caller.</returns>
    private protected abstract double SearchThreshold(ReadOnlySpan<long> bins, double binWidth);

    /// <summary>The smallest e with <paramref name="maxMagnitude"/> &lt; <paramref name="binCount"/> · 2^e, for a positive finite value.</summary>
    private static int ExponentFor(float maxMagnitude, int binCount)
    {
        int exponent = Math.ILogB((double)maxMagnitude) - Math.ILogB((double)binCount);
        while (Math.ScaleB((double)binCount, exponent) <= maxMagnitude)
        {
            exponent++;
        }

        while (Math.ScaleB((double)binCount, exponent - 1) > maxMagnitude)
        {
            exponent--;
        }

        return exponent;
    }

    /// <summary>
    /// Counts every finite value of <paramref name="values"/> in bin floor(|x| · 2^-e). The product is exact (a power of
    /// two scaling whose result is below the bin count, or so small that its floor is 0 anyway), so the float, double and
    /// vector paths give the same bins.
    /// </summary>
    private static void Bin(ReadOnlySpan<float> values, Span<long> counts, int exponent, bool skipNonFinite)
    {
        if (skipNonFinite || exponent is < -126 or > 126)
        {
            // 2^-e is not a normal float (or non-finite values must be skipped): scale in double.
            double wideScale = Math.ScaleB(1.0, -exponent);
            foreach (float value in values)
            {
                if (float.IsFinite(value))
                {
                    counts[(int)(Math.Abs((double)value) * wideScale)]++;
                }
            }

            return;
        }

        float scale = MathF.ScaleB(1f, -exponent);
        int i = 0;
        if (Vector256.IsHardwareAccelerated && values.Length >= Vector256<float>.Count)
        {
            Vector256<float> scales = Vector256.Create(scale);
            for (; i <= values.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                Vector256<int> bins = Vector256.ConvertToInt32(Vector256.Abs(Vector256.Create(values.Slice(i, Vector256<float>.Count))) * scales);
                for (int lane = 0; lane < Vector256<int>.Count; lane++)
                {
                    counts[bins.GetElement(lane)]++;
                }
            }
        }

        for (; i < values.Length; i++)
        {
            counts[(int)(MathF.Abs(values[i]) * scale)]++;
        }
    }

    /// <summary>The bin that bin <paramref name="bin"/> lands in when the width grows by 2^<paramref name="shift"/>.</summary>
    private static int Shifted(int bin, int shift) => shift >= 31 ? 0 : bin >> shift;

    /// <summary>Raises amax to <paramref name="maxMagnitude"/> if larger, widening the bins (and moving the counts) when it no longer fits.</summary>
    private void Widen(float maxMagnitude)
    {
        if (!(maxMagnitude > _maxMagnitude))
        {
            return;
        }

        _maxMagnitude = maxMagnitude;
        int exponent = ExponentFor(maxMagnitude, BinCount);
        if (!_hasWidth)
        {
            // Every count so far is of zeros, in bin 0 whatever the width.
            (_exponent, _hasWidth) = (exponent, true);
            return;
        }

        if (exponent <= _exponent)
        {
            return;
        }

        // Ascending j: bin j >> d <= j was read before (or is j itself), so bin j still holds its own count.
        int shift = exponent - _exponent;
        for (int j = 1; j < _counts.Length; j++)
        {
            long count = _counts[j];
            _counts[j] = 0;
            _counts[Shifted(j, shift)] += count;
        }

        _exponent = exponent;
    }
}
