namespace Quantization;

/// <summary>An array read from a NumPy <c>.npy</c> file, converted to float32 in C (row-major) order.</summary>
/// <param name="Data">The values, row-major.</param>
/// <param name="Shape">The shape; empty for a scalar.</param>
public sealed record NpyArray(float[] Data, int[] Shape);
