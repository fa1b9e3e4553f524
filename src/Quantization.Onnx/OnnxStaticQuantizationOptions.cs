using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Rules for <see cref="OnnxStaticQuantizer"/>: the weight rules it inherits (which nodes' weights, schemes, convention,
/// bias correction, calibration settings; <see cref="OnnxWeightQuantizationOptions.ExcludeNodes"/> keeps a node wholly in
/// float), and the activations' rules, which are separate: which operators, which node names, which observer.
/// </summary>
/// <remarks>
/// By default activations are quantized where ONNX Runtime runs an integer kernel: the inputs of Conv, ConvTranspose,
/// MatMul and Gemm with a constant weight, and Add and the pools where they sit between such operators (see
/// <see cref="IntegerPathOpTypes"/>); not a transformer's residual stream, nor the MatMuls of two activations in attention.
/// </remarks>
public sealed class OnnxStaticQuantizationOptions : OnnxWeightQuantizationOptions
{
    /// <summary>
    /// Gets the operator types whose float activation inputs always get a QuantizeLinear/DequantizeLinear pair: Conv,
    /// ConvTranspose, MatMul and Gemm by default. Add an operator (for example Add) to quantize its inputs everywhere.
    /// The data input of Conv, ConvTranspose and Gemm is quantized; a MatMul's non-constant inputs (but see
    /// <see cref="QuantizeActivationProducts"/>); every non-constant input of other operators.
    /// </summary>
    public ISet<string> ActivationOpTypes { get; } = new HashSet<string>(StringComparer.Ordinal) { "Conv", "ConvTranspose", "MatMul", "Gemm" };

    /// <summary>
    /// Gets the operator types whose inputs are quantized only on an integer path: where each of the node's activation
    /// inputs comes from an operator of <see cref="ActivationOpTypes"/>, from an input it quantizes or from another such
    /// node, and its output reaches an input quantized by <see cref="ActivationOpTypes"/>, each through data-movement
    /// operators (Relu, Clip, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity) or other such nodes. Add, MaxPool, AveragePool and GlobalAveragePool
    /// by default, which ONNX Runtime's CPU provider runs as QLinearAdd and integer pools: a convolutional network's
    /// residual Add (Add, Relu, Conv) is quantized, a transformer's residual stream (Add, then a layer normalization) is
    /// not. A type also in <see cref="ActivationOpTypes"/> is quantized everywhere.
    /// </summary>
    public ISet<string> IntegerPathOpTypes { get; } = new HashSet<string>(StringComparer.Ordinal) { "Add", "MaxPool", "AveragePool", "GlobalAveragePool" };

    /// <summary>
    /// Gets or sets a value indicating whether a MatMul or Gemm whose two operands are both activations (attention's
    /// scores Q·Kᵀ and context P·V) has them quantized; <see langword="false"/> by default: with one range per tensor
    /// they lose accuracy and, in ONNX Runtime, gain no speed.
    /// </summary>
    public bool QuantizeActivationProducts { get; set; }

    /// <summary>Gets node-name patterns whose activation inputs are quantized (a node without a name goes by its first output's name); when empty, every node the operator rules choose is. <see cref="OnnxWeightQuantizationOptions.IncludeNodes"/> chooses weights only.</summary>
    public IList<NamePattern> ActivationIncludeNodes { get; } = [];

    /// <summary>
    /// Gets node-name patterns whose activation inputs stay in float (their weights follow the weight rules, so such a
    /// node runs weight-only, W8A16); <see cref="OnnxWeightQuantizationOptions.ExcludeNodes"/> keeps a node wholly in float.
    /// </summary>
    public IList<NamePattern> ActivationExcludeNodes { get; } = [];

    /// <summary>
    /// Gets or sets automatic mixed precision: when set, a sensitivity pass measures each layer's activation quantization
    /// alone and the fewest layers needed to reach <see cref="OnnxMixedPrecisionOptions.TargetCosine"/> keep float
    /// activations (see <see cref="OnnxMixedPrecisionOptions"/>); <see langword="null"/> (the default) quantizes every
    /// activation the rules choose. Needs calibration data (<see cref="OnnxStaticQuantizer.QuantizeAsync"/>).
    /// </summary>
    public OnnxMixedPrecisionOptions? MixedPrecision { get; set; }

    /// <summary>
    /// Gets or sets SmoothQuant's settings: when set, <see cref="OnnxStaticQuantizer.QuantizeAsync"/> first smooths the
    /// model (<see cref="OnnxSmoothQuant.SmoothAsync(OnnxModel, ICalibrationDataSource{IReadOnlyCollection{NamedOnnxValue}}, OnnxSmoothQuantOptions?, IProgress{CalibrationProgress}?, CancellationToken)"/>) on the same calibration data, moving outlier channels of the
    /// MatMul and Gemm inputs into their weights; <see langword="null"/> (the default) does not. Needs calibration data.
    /// </summary>
    public OnnxSmoothQuantOptions? SmoothQuant { get; set; }

    /// <summary>Gets or sets the activations' scheme: asymmetric uint8 per tensor (ONNX Runtime's default) unless set; it must be per tensor.</summary>
    public QuantizationScheme ActivationScheme { get; set; } = QuantizationScheme.UInt8PerTensorAsymmetric();

    /// <summary>Gets or sets the factory of each activation's observer, given <see cref="ActivationScheme"/>; a <see cref="MinMaxObserver"/> unless set.</summary>
    public Func<QuantizationScheme, IQuantizationObserver> CreateObserver { get; set; } = scheme => new MinMaxObserver(scheme);

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">The activation scheme is not int8 or uint8 per tensor, or GPTQ or MatMulNBits is asked for.</exception>
    internal override void Validate()
    {
        base.Validate();
        if (Gptq is not null)
        {
            throw new NotSupportedException("Static W8A8 rounds weights to nearest (with bias correction); GPTQ is applied by OnnxWeightQuantizer.QuantizeAsync.");
        }

        if (MatMulNBits is not null)
        {
            throw new NotSupportedException("Static W8A8 writes QDQ weights; MatMulNBits is a weight-only format (OnnxWeightQuantizer).");
        }

        if (NodeSchemes.Values.Prepend(Scheme).FirstOrDefault(s => s.Type.GetBitWidth() != 8 || s.Granularity.Kind is not (GranularityKind.PerTensor or GranularityKind.PerChannel)) is QuantizationScheme weights)
        {
            throw new NotSupportedException($"Static W8A8 takes 8-bit weights per channel or per tensor, whose scales give the int32 biases theirs; not {weights.Type} {weights.Granularity}. 4-bit and blocked weights are weight-only (OnnxWeightQuantizer).");
        }

        if (ActivationScheme.Granularity.Kind != GranularityKind.PerTensor || ActivationScheme.Type is not (QuantizedType.Int8 or QuantizedType.UInt8))
        {
            throw new NotSupportedException($"QDQ activations are int8 or uint8 per tensor; the activation scheme is {ActivationScheme}.");
        }
    }

    /// <summary>
    /// Whether the activation name patterns select a node's activation inputs (matched against its name, or its first
    /// output's name when it has none, as the mixed-precision report names layers), and <see cref="OnnxWeightQuantizationOptions.ExcludeNodes"/>
    /// does not keep it in float.
    /// </summary>
    internal bool SelectsActivationsOf(NodeProto node)
    {
        string name = ActivationSites.LayerName(node);
        return (ActivationIncludeNodes.Count == 0 || ActivationIncludeNodes.Any(p => p.IsMatch(name)))
            && !ActivationExcludeNodes.Any(p => p.IsMatch(name))
            && !ExcludeNodes.Any(p => p.IsMatch(node.Name));
    }
}
