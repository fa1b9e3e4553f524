namespace Quantization;

/// <summary>The outcome of an <see cref="RtnQuantizer"/> run.</summary>
/// <param name="Tensors">The quantized tensors, in input order.</param>
/// <param name="Decisions">One decision per input tensor, in input order.</param>
/// <param name="Report">The error and size of every quantized tensor.</param>
public sealed record RtnResult(IReadOnlyList<QuantizedTensor> Tensors, IReadOnlyList<RtnDecision> Decisions, QuantizationReport Report);
