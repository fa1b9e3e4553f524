namespace Quantization.Onnx;

/// <summary>What <see cref="OnnxStaticQuantizer"/> did.</summary>
/// <param name="Weights">A report per quantized weight, in graph order.</param>
/// <param name="Activations">The parameters of every activation that got a QuantizeLinear/DequantizeLinear pair.</param>
/// <param name="Biases">The names of the biases stored as int32.</param>
/// <param name="RaisedWeightScales">How many weight channels had their scale raised so that the bias fits in int32 (see <see cref="OnnxStaticQuantizer"/>).</param>
/// <param name="MixedPrecision">What the mixed-precision search measured and which layers it kept with float activations, or <see langword="null"/> when <see cref="OnnxStaticQuantizationOptions.MixedPrecision"/> was not set.</param>
/// <param name="SmoothQuant">What smoothing changed, or <see langword="null"/> when <see cref="OnnxStaticQuantizationOptions.SmoothQuant"/> was not set.</param>
public sealed record OnnxStaticQuantizationResult(IReadOnlyList<OnnxWeightReport> Weights, IReadOnlyDictionary<string, ScaleAndZeroPoint> Activations, IReadOnlyList<string> Biases, int RaisedWeightScales, OnnxMixedPrecisionResult? MixedPrecision = null, OnnxSmoothQuantResult? SmoothQuant = null);
