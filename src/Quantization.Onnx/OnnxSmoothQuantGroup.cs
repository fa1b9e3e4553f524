namespace Quantization.Onnx;

/// <summary>What <see cref="OnnxSmoothQuant"/> did to one group of MatMul/Gemm layers sharing an input X.</summary>
/// <param name="Input">X, the shared input.</param>
/// <param name="Producer">The node that writes X, which took 1/s; with <see cref="OnnxScaleProducerKind.ExplicitScale"/>, the inserted Mul by 1/s.</param>
/// <param name="ProducerKind">What kind of producer it is.</param>
/// <param name="ProducerNodes">Every node whose constants took 1/s (for a decomposed normalization, the Mul by γ and the Add of β; for an explicit scale, the inserted Mul).</param>
/// <param name="Consumers">The layers whose weights' input rows took s.</param>
/// <param name="RestoreNode">The Mul by s inserted so that X's other readers (a residual Add, a graph output) still see X, or <see langword="null"/> when there are none.</param>
/// <param name="Alpha">The α used.</param>
/// <param name="MaxInputBefore">max_j a_j: the largest |X| over the calibration data.</param>
/// <param name="MaxInputAfter">max_j a_j / s_j: the largest |X / s| over the calibration data.</param>
/// <param name="MaxWeightBefore">The largest |W| over the layers' weights.</param>
/// <param name="MaxWeightAfter">The largest |diag(s)·W| over the layers' weights.</param>
/// <param name="SearchErrors">The search's error (mean squared output error per output element) for each α of the grid, or <see langword="null"/> without a search.</param>
public sealed record OnnxSmoothQuantGroup(
    string Input,
    string Producer,
    OnnxScaleProducerKind ProducerKind,
    IReadOnlyList<string> ProducerNodes,
    IReadOnlyList<string> Consumers,
    string? RestoreNode,
    double Alpha,
    float MaxInputBefore,
    float MaxInputAfter,
    float MaxWeightBefore,
    float MaxWeightAfter,
    IReadOnlyDictionary<double, double>? SearchErrors);
