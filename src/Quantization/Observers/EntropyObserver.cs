namespace Quantization;

/// <summary>
/// Chooses the threshold of |x| that minimizes the KL divergence between the histogram and its quantized version:
/// TensorRT's entropy calibration, as NVIDIA's modelopt (<c>calib/histogram.py</c>, <c>_compute_amax_entropy</c>)
/// computes it.
/// </summary>
/// <remarks>
/// <para>
/// Let c_0 … c_(n-1) be the <see cref="HistogramObserver.UsedBinCount"/> bins in use, of width w, with c_0 replaced
/// by c_1 (TensorRT's <c>bins[0] = bins[1]</c>, which keeps a spike of zeros, as after a ReLU, from dominating), and
/// T = Σ c_j. Let q be the number of quantized bins, 2^(b-1) for a b-bit type (128 for int8 and uint8: the magnitudes
/// of an 8-bit tensor, as TensorRT's signed int8 quantizes them; 8 for 4-bit types). For every candidate i = q … n:
/// </para>
/// <list type="bullet">
/// <item><description>P_j = c_j for j &lt; i - 1 and P_(i-1) = c_(i-1) + Σ_(j ≥ i) c_j: the first i bins with the tail folded into the last kept bin;</description></item>
/// <item><description>Q: bin j &lt; i belongs to quantized bin floor(j · q / i); each quantized bin's total
/// S_k = Σ c_j over its bins (without the tail) is spread uniformly over its non-empty bins (c_j ≠ 0), and empty bins
/// get Q_j = 0;</description></item>
/// <item><description>KL(P‖Q) = Σ_(P_j &gt; 0) p_j · ln(p_j / q_j) with p = P / Σ P and q = Q / Σ Q (scipy's
/// <c>entropy</c>); it is +∞ when some P_j &gt; 0 has Q_j = 0 (an empty last kept bin under a non-empty tail).</description></item>
/// </list>
/// <para>
/// The threshold is i · w for the candidate with the smallest divergence, the LAST (largest i) among equal minima, as
/// TensorRT, clamped to amax; divergences within <see cref="TieTolerance"/> of the smallest count as equal, so that
/// ties of the definition (for example several candidates with divergence 0) stay ties despite rounding. The candidate
/// i = n always has a finite divergence (its last bin holds amax). The divergence is evaluated in double in a fixed
/// order as (Σ P_j ln P_j − Σ_k M_k ln(S_k / m_k)) / T + ln(Σ Q / T), with M_k the mass of P in quantized bin k and m_k
/// its number of non-empty bins, O(q) per candidate with integer prefix sums; this equals the definition up to rounding
/// (about 1e-13 nats).
/// </para>
/// <para>
/// TensorRT's histogram has 2048 bins over the first batch's [0, amax] and grows with bins of that width; this
/// observer's has between BinCount / 2 + 1 and BinCount power-of-two bins over [0, amax] (see <see cref="HistogramObserver"/>),
/// so the smallest candidate is q / n of amax (1/16 to 1/8 with 2048 bins). ONNX Runtime's entropy calibrator differs
/// (a signed histogram, 128 bins and 128 quantized bins by default; its Q takes the non-empty mask after the tail is
/// folded, and both distributions are smoothed, so it has no infinite candidates).
/// </para>
/// <para>
/// Consequence of the infinite candidates: outliers isolated beyond empty bins are clipped only at a candidate whose last
/// kept bin is non-empty, so a tensor whose bulk ends below the smallest candidate keeps its outliers (the threshold is
/// then at or near amax). The method suits convolutional networks; on transformer activations (softmax probabilities,
/// where most mass sits near zero) it tends to clip too much, and percentile or MSE are the better choice.
/// </para>
/// </remarks>
public sealed class EntropyObserver : HistogramObserver
{
    /// <summary>Divergences within this many nats of the smallest are ties (the sums' rounding is far below it).</summary>
    public const double TieTolerance = 1e-9;

    /// <summary>Initializes a new instance of the <see cref="EntropyObserver"/> class.</summary>
    /// <param name="scheme">A per-tensor scheme; its type gives the quantized bin count, its convention computes the parameters.</param>
    /// <param name="binCount">The number of bins, in [<see cref="HistogramObserver.MinBinCount"/>, <see cref="HistogramObserver.MaxBinCount"/>].</param>
    /// <param name="nonFinitePolicy">What to do with NaN and infinities: throw (the default) or skip and count them.</param>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The scheme is not per tensor.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The bin count or the policy is out of range.</exception>
    public EntropyObserver(QuantizationScheme scheme, int binCount = DefaultBinCount, NonFinitePolicy nonFinitePolicy = NonFinitePolicy.Throw)
        : base(scheme, binCount, nonFinitePolicy)
    {
        QuantizedBinCount = 1 << (scheme.Type.GetBitWidth() - 1);
    }

    /// <summary>Gets q, the number of quantized bins the candidates are merged into: 2^(bits - 1) of the scheme's type.</summary>
    public int QuantizedBinCount { get; }

    private protected override double SearchThreshold(ReadOnlySpan<long> bins, double binWidth)
    {
        int n = bins.Length, q = QuantizedBinCount;
        long[] counts = bins.ToArray();
        counts[0] = counts[1];

        // Prefix sums of the counts and of the non-empty bins (integers: exact).
        long[] prefix = new long[n + 1];
        int[] nonEmpty = new int[n + 1];
        for (int j = 0; j < n; j++)
        {
            prefix[j + 1] = prefix[j] + counts[j];
            nonEmpty[j + 1] = nonEmpty[j] + (counts[j] != 0 ? 1 : 0);
        }

        double total = prefix[n];
        double headEntropy = 0; // Σ c_j ln c_j over j <= i - 2, kept up to date as i grows
        for (int j = 0; j < q - 1; j++)
        {
            headEntropy += XLogX(counts[j]);
        }

        double[] divergences = new double[n + 1];
        double best = double.PositiveInfinity;
        for (int i = q; i <= n; i++, headEntropy += XLogX(counts[i - 2]))
        {
            long tail = prefix[n] - prefix[i];
            if (counts[i - 1] == 0 && tail > 0)
            {
                divergences[i] = double.PositiveInfinity;
                continue;
            }

            double sum = headEntropy + XLogX(counts[i - 1] + tail);
            for (int k = 0; k < q; k++)
            {
                int start = (int)((((long)k * i) + q - 1) / q), end = (int)((((long)(k + 1) * i) + q - 1) / q);
                long groupTotal = prefix[end] - prefix[start];
                int groupNonEmpty = nonEmpty[end] - nonEmpty[start];
                if (groupNonEmpty > 0)
                {
                    double mass = groupTotal + (k == q - 1 ? tail : 0);
                    sum -= mass * Math.Log((double)groupTotal / groupNonEmpty);
                }
            }

            divergences[i] = (sum / total) + Math.Log(prefix[i] / total);
            best = Math.Min(best, divergences[i]);
        }

        int chosen = n;
        while (!(divergences[chosen] <= best + TieTolerance))
        {
            chosen--;
        }

        return chosen * binWidth;
    }

    private static double XLogX(long count) => count > 0 ? count * Math.Log(count) : 0;
}
