namespace Quantization;

/// <summary>How an activation's range is chosen from calibration data: the observer <see cref="CalibrationMethodExtensions.CreateObserver"/> makes.</summary>
public enum CalibrationMethod
{
    /// <summary>The observed minimum and maximum (<see cref="MinMaxObserver"/>): any granularity, and the default for weights.</summary>
    MinMax,

    /// <summary>A percentile of |x|, 99.999 % by default, as ONNX Runtime (<see cref="PercentileObserver"/>); per tensor.</summary>
    Percentile,

    /// <summary>TensorRT's KL-divergence search over a histogram of |x| (<see cref="EntropyObserver"/>); per tensor.</summary>
    Entropy,

    /// <summary>The threshold of least expected squared quantization error over a histogram of |x| (<see cref="MseObserver"/>); per tensor.</summary>
    Mse,
}
