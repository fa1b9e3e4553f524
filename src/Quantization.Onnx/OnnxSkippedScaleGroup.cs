namespace Quantization.Onnx;

/// <summary>A group of MatMul/Gemm layers sharing one input whose channels were not scaled, and why.</summary>
/// <param name="Input">The shared input tensor.</param>
/// <param name="Producer">The node that produces it, or <see langword="null"/> for a graph input.</param>
/// <param name="Consumers">The MatMul/Gemm nodes that read it.</param>
/// <param name="Reason">Why the group was left alone.</param>
public sealed record OnnxSkippedScaleGroup(string Input, string? Producer, IReadOnlyList<string> Consumers, string Reason);
