namespace Quantization.Onnx;

/// <summary>
/// Rules for <see cref="OnnxDynamicQuantizer"/>: the node selection of <see cref="OnnxWeightQuantizationOptions"/>
/// (<see cref="OnnxWeightQuantizationOptions.OpTypes"/>, here MatMul and Gemm by default and at most;
/// <see cref="OnnxWeightQuantizationOptions.IncludeNodes"/>, <see cref="OnnxWeightQuantizationOptions.ExcludeNodes"/>)
/// and its weight schemes (<see cref="OnnxWeightQuantizationOptions.Scheme"/>,
/// <see cref="OnnxWeightQuantizationOptions.NodeSchemes"/>), which must be symmetric int8 or asymmetric uint8, per
/// channel (the default: int8) or per tensor. Dynamic quantization needs no calibration data (except for <see cref="SmoothQuant"/>), so bias
/// correction, GPTQ and MatMulNBits do not apply: <see cref="OnnxWeightQuantizationOptions.Gptq"/> and
/// <see cref="OnnxWeightQuantizationOptions.MatMulNBits"/> must stay <see langword="null"/>.
/// </summary>
public sealed class OnnxDynamicQuantizationOptions : OnnxWeightQuantizationOptions
{
    /// <summary>The operators whose weights dynamic quantization knows.</summary>
    private static readonly string[] DynamicOperators = ["MatMul", "Gemm"];

    /// <summary>Initializes a new instance of the <see cref="OnnxDynamicQuantizationOptions"/> class: MatMul and Gemm selected.</summary>
    public OnnxDynamicQuantizationOptions()
    {
        OpTypes.Remove("Conv");
        OpTypes.Remove("ConvTranspose");
    }

    /// <summary>
    /// Gets or sets SmoothQuant's settings: when set, <see cref="OnnxDynamicQuantizer.QuantizeAsync"/> first smooths the
    /// model (<see cref="OnnxSmoothQuant"/>) on the calibration data, moving outlier channels of the MatMul/Gemm inputs
    /// into the weights, and its α search (if on) measures activations as dynamic quantization rounds them
    /// (<see cref="OnnxSmoothQuantOptions.DynamicActivations"/>). With <see cref="OnnxSmoothQuantOptions.ExplicitScales"/>,
    /// the layers after nonlinear operators (an FFN's second MatMul after Gelu, attention's output projection) are smoothed
    /// too. <see langword="null"/> (no smoothing) unless set; <see cref="OnnxDynamicQuantizer.Quantize"/> refuses it.
    /// </summary>
    public OnnxSmoothQuantOptions? SmoothQuant { get; set; }

    /// <inheritdoc/>
    /// <exception cref="ArgumentException"><see cref="OnnxWeightQuantizationOptions.OpTypes"/> holds an operator other than MatMul and Gemm.</exception>
    /// <exception cref="NotSupportedException">GPTQ or MatMulNBits is asked for, or a weight scheme is neither symmetric int8 nor asymmetric uint8, per channel or per tensor.</exception>
    internal override void Validate()
    {
        base.Validate();
        string[] unknown = [.. OpTypes.Where(op => !DynamicOperators.Contains(op))];
        if (unknown.Length > 0)
        {
            throw new ArgumentException($"Dynamic quantization knows MatMul and Gemm; OpTypes also holds {string.Join(", ", unknown)}.", "options");
        }

        if (Gptq is not null || MatMulNBits is not null)
        {
            throw new NotSupportedException("Dynamic quantization rounds weights to nearest per channel and writes MatMulInteger; set Gptq and MatMulNBits to null.");
        }

        foreach ((string node, QuantizationScheme scheme) in NodeSchemes.Prepend(new KeyValuePair<string, QuantizationScheme>("(default)", Scheme)))
        {
            bool int8 = scheme.Type == QuantizedType.Int8 && scheme.Symmetric, uint8 = scheme.Type == QuantizedType.UInt8 && !scheme.Symmetric;
            if (!(int8 || uint8) || scheme.Granularity.Kind is not (GranularityKind.PerChannel or GranularityKind.PerTensor))
            {
                throw new NotSupportedException($"Dynamic quantization stores weights as symmetric int8 (zero point 0, which ONNX Runtime's integer kernels take fastest) or asymmetric uint8, per channel or per tensor; the scheme of node {node} is {scheme}.");
            }
        }
    }
}
