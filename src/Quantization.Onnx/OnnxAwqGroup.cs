namespace Quantization.Onnx;

/// <summary>What <see cref="OnnxAwq"/> did to one group of MatMul/Gemm layers sharing an input X.</summary>
/// <param name="Input">X, the shared input.</param>
/// <param name="Producer">The node that writes X, which took 1/s; with <see cref="OnnxScaleProducerKind.ExplicitScale"/>, the inserted Mul by 1/s; <see langword="null"/> when the chosen scales are all 1 (α = 0) and nothing was folded.</param>
/// <param name="ProducerKind">What kind of producer it is.</param>
/// <param name="Consumers">The layers whose weights' input rows took s (and were clipped).</param>
/// <param name="RestoreNode">The Mul by s inserted so that X's other readers still see X, or <see langword="null"/> when there are none.</param>
/// <param name="Alpha">The chosen α of s = mean|x|^α (normalised by sqrt(max s · min s)).</param>
/// <param name="SearchErrors">The search's error (mean squared output error per output element of the layers, with quantized weights) for each α of the grid.</param>
/// <param name="ClipRatios">The mean chosen clipping fraction of each clipped layer, by node name (1 where no group was clipped).</param>
/// <param name="Unclipped">The layers not clipped, by node name, with the reason.</param>
public sealed record OnnxAwqGroup(
    string Input,
    string? Producer,
    OnnxScaleProducerKind ProducerKind,
    IReadOnlyList<string> Consumers,
    string? RestoreNode,
    double Alpha,
    IReadOnlyDictionary<double, double> SearchErrors,
    IReadOnlyDictionary<string, double> ClipRatios,
    IReadOnlyDictionary<string, string> Unclipped);
