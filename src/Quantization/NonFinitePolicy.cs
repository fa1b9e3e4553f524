namespace Quantization;

/// <summary>What observing does with NaN and infinities.</summary>
public enum NonFinitePolicy
{
    /// <summary>Throw a <see cref="NonFiniteValueException"/> naming the tensor and the first bad index (the default).</summary>
    Throw,

    /// <summary>Leave non-finite values out of the statistics and count them.</summary>
    Skip,
}
