namespace Quantization;

/// <summary>
/// Collects statistics of the tensors it is shown and turns them into quantization parameters: statistics first,
/// parameters second, as torch.ao separates them. State is O(parameters), never O(samples).
/// </summary>
public interface IQuantizationObserver
{
    /// <summary>Gets the scheme whose granularity the statistics follow and whose convention computes the parameters.</summary>
    QuantizationScheme Scheme { get; }

    /// <summary>Gets the number of finite values observed so far.</summary>
    long ObservedCount { get; }

    /// <summary>Folds a tensor into the statistics.</summary>
    /// <param name="values">The values, row-major.</param>
    /// <param name="shape">The tensor's shape; every call must give the same parameter shape for the scheme's granularity.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    void Observe(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, string? tensorName = null);

    /// <summary>Computes the parameters from the statistics so far.</summary>
    /// <returns>One scale and zero point per parameter of the scheme's granularity.</returns>
    QuantizationParameters ComputeParameters();
}
