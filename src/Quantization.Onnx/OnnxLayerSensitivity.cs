namespace Quantization.Onnx;

/// <summary>How much quantizing one layer's activations alone costs, as measured by the mixed-precision search.</summary>
/// <param name="Node">The layer's node name (its first output's name when the node has none).</param>
/// <param name="OpType">The node's operator type.</param>
/// <param name="Inputs">The activation inputs the rules quantize for it.</param>
/// <param name="Cosine">The mean output cosine against the float model with every weight quantized and only this layer's activations.</param>
/// <param name="KeptInFloat">Whether the search kept its activations in float.</param>
public sealed record OnnxLayerSensitivity(string Node, string OpType, IReadOnlyList<string> Inputs, double Cosine, bool KeptInFloat);
