namespace Quantization.Onnx;

/// <summary>What <see cref="OnnxDynamicQuantizer"/> did.</summary>
/// <param name="Weights">A report per quantized weight, in graph order; <see cref="OnnxWeightReport.Axis"/> is the output-channel axis of the original weight.</param>
/// <param name="Activations">The activations that are quantized at run time (each by one DynamicQuantizeLinear), in graph order.</param>
/// <param name="SmoothQuant">What smoothing changed, or <see langword="null"/> when <see cref="OnnxDynamicQuantizationOptions.SmoothQuant"/> was not set.</param>
public sealed record OnnxDynamicQuantizationResult(IReadOnlyList<OnnxWeightReport> Weights, IReadOnlyList<string> Activations, OnnxSmoothQuantResult? SmoothQuant = null);
