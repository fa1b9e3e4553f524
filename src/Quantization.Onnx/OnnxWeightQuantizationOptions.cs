using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>Rules for <see cref="OnnxWeightQuantizer"/>, and the weight rules of <see cref="OnnxStaticQuantizationOptions"/>.</summary>
public class OnnxWeightQuantizationOptions
{
    /// <summary>The operators whose weights the quantizers know.</summary>
    private static readonly string[] WeightedOperators = ["Conv", "ConvTranspose", "MatMul", "Gemm"];

    private QuantizationScheme _scheme = QuantizationScheme.Int8PerChannel();

    /// <summary>Gets the operator types whose weights are quantized: Conv, ConvTranspose, MatMul and Gemm by default; remove some to keep them in float (no other operator is accepted).</summary>
    public ISet<string> OpTypes { get; } = new HashSet<string>(StringComparer.Ordinal) { "Conv", "ConvTranspose", "MatMul", "Gemm" };

    /// <summary>Gets node-name patterns to quantize; when empty, every node of <see cref="OpTypes"/> is.</summary>
    public IList<NamePattern> IncludeNodes { get; } = [];

    /// <summary>Gets node-name patterns whose nodes stay in float; they win over everything else.</summary>
    public IList<NamePattern> ExcludeNodes { get; } = [];

    /// <summary>Gets per-node schemes, by node name, that replace <see cref="Scheme"/> for that node's weight.</summary>
    public IDictionary<string, QuantizationScheme> NodeSchemes { get; } = new Dictionary<string, QuantizationScheme>(StringComparer.Ordinal);

    /// <summary>
    /// Gets or sets the weights' scheme unless <see cref="NodeSchemes"/> names one for the node: symmetric int8 per
    /// channel with ONNX Runtime's arithmetic by default. Per channel means the operator's output-channel axis, whatever
    /// axis the scheme names; per tensor is allowed too; per group means blocks along the operator's input axis (Conv's
    /// input channels, MatMul's K), which, like 4-bit types, needs DequantizeLinear of opset 21 (<see cref="OnnxOpsetUpgrader"/>
    /// raises a model to it) unless the weight is written as <see cref="MatMulNBits"/>.
    /// </summary>
    /// <exception cref="ArgumentNullException">The value is <see langword="null"/>.</exception>
    public QuantizationScheme Scheme
    {
        get => _scheme;
        set => _scheme = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>
    /// Gets or sets a value indicating whether, when there is calibration data, each quantized layer's bias takes back
    /// the mean shift ΔW·E[x] that rounding its weight causes (empirical bias correction); on by default. Applies to
    /// Conv, MatMul with a 2-D weight and Gemm without transA and with alpha = beta = 1, except the MatMul and Gemm layers
    /// that <see cref="Gptq"/> rounds: GPTQ already minimises their output error on the same data, and correcting the mean on
    /// top measured worse (all-MiniLM-L6-v2, int4 blocks of 32: embedding cosine 0.9842 with, 0.9862 without).
    /// </summary>
    public bool BiasCorrection { get; set; } = true;

    /// <summary>
    /// Gets or sets the GPTQ settings, or <see langword="null"/> (the default) to round to nearest. With calibration
    /// data (<see cref="OnnxWeightQuantizer.QuantizeAsync"/>), the weights of MatMul and Gemm nodes are then rounded by
    /// GPTQ against their inputs' Hessians, with the same scales as rounding to nearest (per channel, or per block when
    /// written as <see cref="MatMulNBits"/>); Conv weights (1-D and 2-D) are rounded by GPTQ against the Hessians of
    /// their unfolded input patches (im2col, one per group of a grouped Conv), per channel or per block along the input
    /// channels, with rounding to nearest's scales; Conv weights of more spatial axes, and per-tensor weights of grouped
    /// Convs, are rounded to nearest. The input axis of each weight comes from its node, whatever
    /// <see cref="GptqOptions.InputAxis"/> says.
    /// </summary>
    public GptqOptions? Gptq { get; set; }

    /// <summary>
    /// Gets or sets the search that chooses each weight group's (or channel's) range by its own rounding error, or
    /// <see langword="null"/> (the default) for the min and max; see <see cref="WeightRangeSearch"/>. Data-free; applies to
    /// every weight this quantizer rounds (to nearest, by <see cref="Gptq"/>, or as <see cref="MatMulNBits"/> blocks), so
    /// <see cref="GptqOptions.RangeSearch"/> must stay <see langword="null"/>. Worth it at 4 bits: ResNet-18 with asymmetric
    /// int4 in blocks of 32 keeps more of its features with it than without (see the benchmarks README).
    /// </summary>
    public WeightRangeSearch? RangeSearch { get; set; }

    /// <summary>
    /// Gets or sets the AWQ settings, or <see langword="null"/> (the default) for none. With calibration data
    /// (<see cref="OnnxWeightQuantizer.QuantizeAsync"/>), the selected MatMul and Gemm layers' input channels are first
    /// scaled and their weights clipped by <see cref="OnnxAwq"/>, searching with the scheme each weight is then quantized
    /// with (<see cref="Scheme"/>, <see cref="NodeSchemes"/>, or the <see cref="MatMulNBits"/> blocks along K), so
    /// <see cref="AwqOptions.Scheme"/> must be <see langword="null"/>; then the weights are quantized as without it (rounding
    /// to nearest, or GPTQ), on statistics calibrated on the rewritten model.
    /// </summary>
    public AwqOptions? Awq { get; set; }

    /// <summary>
    /// Gets or sets the MatMulNBits settings, or <see langword="null"/> (the default) to write every weight with a
    /// DequantizeLinear (QDQ). When set, <see cref="OnnxWeightQuantizer"/> writes the 2-D weights of MatMul nodes, and of
    /// Gemm nodes without transA, with alpha = beta = 1 and a bias that is absent or a constant of N values, as ONNX
    /// Runtime's <c>com.microsoft.MatMulNBits</c> with codes in blocks along K (see <see cref="MatMulNBitsOptions"/>): 8
    /// bits for an int8 or uint8 scheme, 4 for int4 or uint4 (<see cref="QuantizationScheme.Int4PerGroup"/>). Other
    /// weights, and weights that several nodes share, stay QDQ. The scheme's symmetry and convention apply per block; its
    /// granularity is replaced by the blocks.
    /// </summary>
    public MatMulNBitsOptions? MatMulNBits { get; set; }

    /// <summary>
    /// Gets or sets how embedding tables (the constant data of Gather nodes) are quantized, or <see langword="null"/> to
    /// keep them in float. By default, tables of at least a million elements become int8 per row read by ONNX Runtime's
    /// <c>com.microsoft.GatherBlockQuantized</c> (see <see cref="OnnxEmbeddingQuantizationOptions"/>); applies to
    /// weight-only, static and dynamic quantization alike.
    /// </summary>
    public OnnxEmbeddingQuantizationOptions? Embeddings { get; set; } = new();

    /// <summary>Gets how calibration data runs through ONNX Runtime.</summary>
    public OnnxCalibrationOptions Calibration { get; } = new();

    /// <summary>Checks the rules.</summary>
    /// <exception cref="ArgumentException"><see cref="OpTypes"/> names an operator the quantizers do not know.</exception>
    internal virtual void Validate()
    {
        string[] unknown = [.. OpTypes.Where(op => !WeightedOperators.Contains(op))];
        if (unknown.Length > 0)
        {
            throw new ArgumentException($"OpTypes may hold only {string.Join(", ", WeightedOperators)}; not {string.Join(", ", unknown)}.", "options");
        }

        if (Gptq?.RangeSearch is not null)
        {
            throw new ArgumentException("Gptq.RangeSearch must be null here: set RangeSearch, which applies to every weight, GPTQ's too.", "options");
        }

        if (Awq is not null)
        {
            Awq.Validate();
            if (Awq.Scheme is not null)
            {
                throw new ArgumentException("Awq.Scheme must be null here: AWQ searches with the scheme each weight is quantized with (Scheme, NodeSchemes or the MatMulNBits blocks).", "options");
            }
        }
    }

    /// <summary>Whether the rules select a node: its type is one of <see cref="OpTypes"/> and <see cref="SelectsName"/>.</summary>
    internal bool Selects(NodeProto node) => OpTypes.Contains(node.OpType) && SelectsName(node);

    /// <summary>Whether an include pattern (if any) matches the node's name and no exclude pattern does.</summary>
    internal bool SelectsName(NodeProto node) =>
        node.IsSelectedBy(IncludeNodes, ExcludeNodes);
}
