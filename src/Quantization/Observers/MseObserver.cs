namespace Quantization;

/// <summary>
/// Chooses the threshold of |x| that minimizes the expected squared quantization error of the histogram under the
/// scheme: the clipping error beyond the threshold plus the rounding error inside it.
/// </summary>
/// <remarks>
/// <para>
/// Each bin's mass sits at its centre x_j = (j + 0.5) · w, j &lt; n (the <see cref="HistogramObserver.UsedBinCount"/>
/// bins in use). The candidates are t_i = min(i · w, amax) in float for i = 1 … n: every bin edge up to amax, the last
/// being amax itself (MinMax). For each, s is the scale the scheme's convention gives the range that t_i would produce
/// (see <see cref="HistogramObserver"/>: [-t, t] for symmetric schemes, the observed range clipped to [-t, t]
/// otherwise), and the error is
/// </para>
/// <para>
/// E(t) = Σ_j c_j · e_j², with e_j = x_j − t when x_j &gt; t (clipped) and e_j = x_j − s · round(x_j / s) otherwise
/// (rounded to the grid, with the convention's midpoint rounding),
/// </para>
/// <para>
/// summed in double in bin order. The threshold is the candidate with the smallest E, the LAST (largest t) among equal
/// minima. The search costs O(n²) per tensor (about 4 million terms with 2048 bins), once per
/// <see cref="HistogramObserver.ComputeThreshold"/>. Like modelopt's MSE calibrator it models each bin by its centre;
/// unlike it, the candidates start at the first bin and end at amax, and the scale is the scheme's own.
/// </para>
/// </remarks>
public sealed class MseObserver : HistogramObserver
{
    /// <summary>Initializes a new instance of the <see cref="MseObserver"/> class.</summary>
    /// <param name="scheme">A per-tensor scheme; its convention computes each candidate's scale and the parameters.</param>
    /// <param name="binCount">The number of bins, in [<see cref="HistogramObserver.MinBinCount"/>, <see cref="HistogramObserver.MaxBinCount"/>].</param>
    /// <param name="nonFinitePolicy">What to do with NaN and infinities: throw (the default) or skip and count them.</param>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The scheme is not per tensor.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The bin count or the policy is out of range.</exception>
    public MseObserver(QuantizationScheme scheme, int binCount = DefaultBinCount, NonFinitePolicy nonFinitePolicy = NonFinitePolicy.Throw)
        : base(scheme, binCount, nonFinitePolicy)
    {
    }

    private protected override double SearchThreshold(ReadOnlySpan<long> bins, double binWidth)
    {
        QuantizationScheme scheme = Scheme;
        MidpointRounding rounding = scheme.Convention.Rounding;
        double best = double.PositiveInfinity;
        float bestThreshold = MaxMagnitude;
        for (int i = 1; i <= bins.Length; i++)
        {
            float threshold = (float)Math.Min(i * binWidth, MaxMagnitude);
            (float low, float high) = RangeFor(threshold);
            double scale = scheme.Convention.Compute(low, high, scheme.QuantMin, scheme.QuantMax, scheme.Symmetric, out _, nameof(scheme)).Scale;
            double error = 0;
            for (int j = 0; j < bins.Length; j++)
            {
                if (bins[j] != 0)
                {
                    double centre = (j + 0.5) * binWidth;
                    double e = centre > threshold ? centre - threshold : centre - (scale * Math.Round(centre / scale, rounding));
                    error += bins[j] * e * e;
                }
            }

            if (error <= best)
            {
                (best, bestThreshold) = (error, threshold);
            }
        }

        return bestThreshold;
    }
}
