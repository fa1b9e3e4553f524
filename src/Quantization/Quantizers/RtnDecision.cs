namespace Quantization;

/// <summary>What <see cref="RtnQuantizer"/> decided for one tensor.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="Scheme">The scheme it was quantized with, or <see langword="null"/> when it was kept in float.</param>
/// <param name="Reason">Why: the rule that chose the scheme, or why the tensor was kept in float.</param>
public sealed record RtnDecision(string Name, QuantizationScheme? Scheme, string Reason);
