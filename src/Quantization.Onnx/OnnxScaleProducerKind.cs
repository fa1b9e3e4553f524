namespace Quantization.Onnx;

/// <summary>
/// What produces the input that a group of MatMul/Gemm layers shares, and so what takes the factor 1/s when the
/// layers' weights take s (SmoothQuant, AWQ): every kind scales each channel of its output's last axis by a constant.
/// </summary>
public enum OnnxScaleProducerKind
{
    /// <summary>A LayerNormalization operator (opset 17): 1/s goes into its Scale and Bias inputs.</summary>
    LayerNormalization,

    /// <summary>An RMS normalization operator (RMSNormalization, opset 23, or ONNX Runtime's SimplifiedLayerNormalization): 1/s goes into its scale.</summary>
    RmsNormalization,

    /// <summary>
    /// The layer normalization exporters write as separate operators: ReduceMean, Sub, Pow (or Mul of the difference
    /// by itself), ReduceMean, Add of ε, Sqrt, Div, then Mul by a constant γ and (optionally) Add of a constant β;
    /// 1/s goes into γ and β.
    /// </summary>
    DecomposedLayerNormalization,

    /// <summary>
    /// The RMS normalization exporters write as separate operators: x divided by Sqrt(ReduceMean(Pow(x, 2)) + ε) (or
    /// multiplied by its Reciprocal), then Mul by a constant γ and (optionally) Add of a constant β; 1/s goes into γ and β.
    /// </summary>
    DecomposedRmsNormalization,

    /// <summary>A MatMul or Gemm with a constant weight, optionally followed by an Add of a constant bias: 1/s goes into the weight's output columns and the bias.</summary>
    Linear,

    /// <summary>
    /// No producer takes 1/s (it is nonlinear or moves channels, such as a Gelu or a Reshape, or X is a graph input):
    /// a new Mul by the constant 1/s (per channel of the last axis) is inserted after X and feeds only the group's
    /// layers, whose weights take s; X's other readers still see X. Only with <see cref="OnnxSmoothQuantOptions.ExplicitScales"/>.
    /// </summary>
    ExplicitScale,
}
