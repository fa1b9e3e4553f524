namespace Quantization;

/// <summary>A named fp32 tensor, such as a weight read from a model file.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="Values">The values, row-major.</param>
/// <param name="Shape">The shape.</param>
public sealed record NamedTensor(string Name, ReadOnlyMemory<float> Values, int[] Shape);
