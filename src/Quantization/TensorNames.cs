namespace Quantization;

/// <summary>How messages name a tensor.</summary>
internal static class TensorNames
{
    /// <summary>Gets "Tensor 'name'", or "The tensor" when it has no name.</summary>
    public static string Describe(string? name) => name is null ? "The tensor" : $"Tensor '{name}'";
}
