namespace Quantization;

/// <summary>
/// Clips |x| at a percentile of its histogram, as ONNX Runtime's percentile calibrator (99.999 % over 2048 bins by
/// default): the threshold is the LEFT edge <c>k · w</c> of the first bin k whose cumulative count reaches the
/// percentile, that is the smallest k with <c>(double)(counts[0] + ... + counts[k]) / N &gt;= percentile / 100</c> in
/// double, N the number of values counted.
/// </summary>
/// <remarks>
/// ONNX Runtime (<c>calibrate.py</c>, <c>HistogramCollector.compute_percentile</c>) takes <c>hist_edges[idx]</c> with
/// <c>idx = searchsorted(cumsum(hist / total), percentile / 100)</c>, the same left edge; this class reproduces that
/// rule on its own histogram (see <see cref="HistogramObserver"/>), which starts at 0 and has power-of-two bin widths,
/// where ONNX Runtime's symmetric calibrator starts its |x| histogram at the first batch's smallest |x| and appends bins
/// of that batch's width, and its asymmetric calibrator histograms signed values and cuts both tails. Because the left
/// edge is taken, 100 % gives the left edge of the last bin, just below amax (at most one bin width).
/// </remarks>
public sealed class PercentileObserver : HistogramObserver
{
    /// <summary>The default percentile, ONNX Runtime's.</summary>
    public const double DefaultPercentile = 99.999;

    /// <summary>Initializes a new instance of the <see cref="PercentileObserver"/> class.</summary>
    /// <param name="scheme">A per-tensor scheme; its convention computes the parameters.</param>
    /// <param name="percentile">The percentage of |x| kept inside the threshold, in (0, 100].</param>
    /// <param name="binCount">The number of bins, in [<see cref="HistogramObserver.MinBinCount"/>, <see cref="HistogramObserver.MaxBinCount"/>].</param>
    /// <param name="nonFinitePolicy">What to do with NaN and infinities: throw (the default) or skip and count them.</param>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The scheme is not per tensor.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The percentile, the bin count or the policy is out of range.</exception>
    public PercentileObserver(QuantizationScheme scheme, double percentile = DefaultPercentile, int binCount = DefaultBinCount, NonFinitePolicy nonFinitePolicy = NonFinitePolicy.Throw)
        : base(scheme, binCount, nonFinitePolicy)
    {
        if (!(percentile > 0 && percentile <= 100))
        {
            throw new ArgumentOutOfRangeException(nameof(percentile), percentile, "The percentile must be in (0, 100].");
        }

        Percentile = percentile;
    }

    /// <summary>Gets the percentage of |x| kept inside the threshold.</summary>
    public double Percentile { get; }

    private protected override double SearchThreshold(ReadOnlySpan<long> bins, double binWidth)
    {
        long total = 0;
        foreach (long count in bins)
        {
            total += count;
        }

        double fraction = Percentile / 100;
        long cumulative = 0;
        for (int k = 0; k < bins.Length - 1; k++)
        {
            cumulative += bins[k];
            if ((double)cumulative / total >= fraction)
            {
                return k * binWidth;
            }
        }

        // The cumulative fraction of the last bin is 1.
        return (bins.Length - 1) * binWidth;
    }
}
