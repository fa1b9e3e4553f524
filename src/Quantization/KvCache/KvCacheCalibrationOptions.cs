using static System.FormattableString;

namespace Quantization;

/// <summary>
/// How a <see cref="KvCacheCalibrator"/> turns the keys and values it observes into static scales: the threshold method
/// (one of the library's observers), which channels share a threshold, and the scheme it creates.
/// </summary>
public sealed class KvCacheCalibrationOptions
{
    /// <summary>
    /// The default histogram bin count: smaller than <see cref="HistogramObserver.DefaultBinCount"/> because the
    /// calibrator may keep one histogram per channel (8 bytes a bin) and <see cref="CalibrationMethod.Mse"/> searches in
    /// time quadratic in the bins; 512 bins still resolve an int8 step (amax / 127) into 2 to 4 bins.
    /// </summary>
    public const int DefaultBinCount = 512;

    private readonly CalibrationMethod _method = CalibrationMethod.MinMax;
    private readonly double _percentile = PercentileObserver.DefaultPercentile;
    private readonly int _binCount = DefaultBinCount;
    private readonly KvCacheScaleSharing _keySharing = KvCacheScaleSharing.Channel;
    private readonly KvCacheScaleSharing _valueSharing = KvCacheScaleSharing.Channel;
    private readonly KvCacheSchemeKind _scheme = KvCacheSchemeKind.StaticPerChannel;

    /// <summary>
    /// Gets how a threshold is chosen from the observed |x| (the default, <see cref="CalibrationMethod.MinMax"/>, takes
    /// the largest): each threshold t gives the symmetric int8 scale <c>t / 127</c> with ONNX Runtime's arithmetic.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The method is not defined.</exception>
    public CalibrationMethod Method
    {
        get => _method;
        init => _method = Enum.IsDefined(value) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "Unknown calibration method.");
    }

    /// <summary>Gets the percentile of <see cref="CalibrationMethod.Percentile"/>, in (0, 100]; <see cref="PercentileObserver.DefaultPercentile"/> by default.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The percentile is not in (0, 100].</exception>
    public double Percentile
    {
        get => _percentile;
        init => _percentile = value is > 0 and <= 100 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The percentile must be in (0, 100].");
    }

    /// <summary>
    /// Gets the bin count of each histogram of the histogram methods, in [<see cref="HistogramObserver.MinBinCount"/>,
    /// <see cref="HistogramObserver.MaxBinCount"/>]; <see cref="DefaultBinCount"/> by default. The calibrator holds one
    /// histogram per threshold: 8 x bin count bytes each.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The bin count is out of range.</exception>
    public int BinCount
    {
        get => _binCount;
        init => _binCount = value is >= HistogramObserver.MinBinCount and <= HistogramObserver.MaxBinCount
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, Invariant($"The bin count must be in [{HistogramObserver.MinBinCount}, {HistogramObserver.MaxBinCount}]."));
    }

    /// <summary>Gets which key channels share a threshold; <see cref="KvCacheScaleSharing.Channel"/> by default.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not defined.</exception>
    public KvCacheScaleSharing KeySharing
    {
        get => _keySharing;
        init => _keySharing = Enum.IsDefined(value) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "Unknown scale sharing.");
    }

    /// <summary>Gets which value channels share a threshold, for <see cref="KvCacheSchemeKind.StaticPerChannel"/>; <see cref="KvCacheScaleSharing.Channel"/> by default.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not defined.</exception>
    public KvCacheScaleSharing ValueSharing
    {
        get => _valueSharing;
        init => _valueSharing = Enum.IsDefined(value) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "Unknown scale sharing.");
    }

    /// <summary>
    /// Gets the scheme <see cref="KvCacheCalibrator.CreateScheme"/> creates: <see cref="KvCacheSchemeKind.StaticPerChannel"/>
    /// (the default: static keys and values) or <see cref="KvCacheSchemeKind.StaticKeysPerChannel"/> (static keys, values
    /// per token and KV head; the calibrator then observes the keys only).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The kind is not one of the two static kinds.</exception>
    public KvCacheSchemeKind Scheme
    {
        get => _scheme;
        init => _scheme = value is KvCacheSchemeKind.StaticPerChannel or KvCacheSchemeKind.StaticKeysPerChannel
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "A calibrator creates StaticPerChannel or StaticKeysPerChannel schemes; the other kinds need no calibration.");
    }
}
