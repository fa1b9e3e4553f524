namespace Quantization;

/// <summary>Creates the observer of a <see cref="CalibrationMethod"/>.</summary>
public static class CalibrationMethodExtensions
{
    /// <summary>
    /// Creates a fresh observer of <paramref name="method"/> for <paramref name="scheme"/>, for factories such as
    /// <c>options.CreateObserver = scheme =&gt; CalibrationMethod.Entropy.CreateObserver(scheme)</c>.
    /// </summary>
    /// <param name="method">The method.</param>
    /// <param name="scheme">The scheme; the histogram methods take per-tensor schemes only.</param>
    /// <param name="percentile">The percentile of <see cref="CalibrationMethod.Percentile"/>, in (0, 100]; ignored by the other methods.</param>
    /// <param name="binCount">The histogram's bin count for the histogram methods; ignored by <see cref="CalibrationMethod.MinMax"/>.</param>
    /// <param name="nonFinitePolicy">What the observer does with NaN and infinities.</param>
    /// <returns>A <see cref="MinMaxObserver"/>, <see cref="PercentileObserver"/>, <see cref="EntropyObserver"/> or <see cref="MseObserver"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">A histogram method for a scheme that is not per tensor.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The method, the policy, the percentile or the bin count is out of range.</exception>
    public static IQuantizationObserver CreateObserver(
        this CalibrationMethod method,
        QuantizationScheme scheme,
        double percentile = PercentileObserver.DefaultPercentile,
        int binCount = HistogramObserver.DefaultBinCount,
        NonFinitePolicy nonFinitePolicy = NonFinitePolicy.Throw) => method switch
        {
            CalibrationMethod.MinMax => new MinMaxObserver(scheme, nonFinitePolicy),
            CalibrationMethod.Percentile => new PercentileObserver(scheme, percentile, binCount, nonFinitePolicy),
            CalibrationMethod.Entropy => new EntropyObserver(scheme, binCount, nonFinitePolicy),
            CalibrationMethod.Mse => new MseObserver(scheme, binCount, nonFinitePolicy),
            _ => throw new ArgumentOutOfRangeException(nameof(method), method, "Unknown calibration method."),
        };
}
