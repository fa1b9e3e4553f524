namespace Quantization.Onnx;

/// <summary>What <see cref="OnnxWeightQuantizer"/> did to one weight.</summary>
/// <param name="Node">The (first) node that consumes the weight.</param>
/// <param name="OpType">That node's operator type.</param>
/// <param name="Weight">The weight's name (an initializer or a Constant node's output).</param>
/// <param name="Axis">The axis of the weight's parameters: its output-channel axis (per channel, and MatMulNBits' N), its input axis (blocks), or <see langword="null"/> when it was quantized per tensor.</param>
/// <param name="Report">The weight's quantization error and sizes.</param>
public sealed record OnnxWeightReport(string Node, string OpType, string Weight, int? Axis, TensorErrorReport Report);
