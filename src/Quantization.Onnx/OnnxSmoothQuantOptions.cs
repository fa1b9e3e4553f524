using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>Rules for <see cref="OnnxSmoothQuant"/>.</summary>
public sealed class OnnxSmoothQuantOptions
{
    private QuantizationScheme _activationScheme = QuantizationScheme.UInt8PerTensorAsymmetric();

    /// <summary>Gets or sets α, the migration strength in s_j = max(a_j^α / w_j^(1−α), 1e-5): 0.5 (the paper's) unless set; in [0, 1]. Used for every group unless <see cref="SearchAlpha"/> is set.</summary>
    public double Alpha { get; set; } = 0.5;

    /// <summary>
    /// Gets or sets a value indicating whether each group gets its own α from <see cref="AlphaGrid"/>: the one with the
    /// least output error of the group's layers when their inputs and weights are quantized (see <see cref="OnnxSmoothQuant"/>);
    /// off unless set.
    /// </summary>
    public bool SearchAlpha { get; set; }

    /// <summary>Gets the α values the search tries: 0, 0.05, …, 1 (i / 20 for i = 0 … 20) unless changed; each in [0, 1]. Ties go to the smaller α.</summary>
    public IList<double> AlphaGrid { get; } = [.. Enumerable.Range(0, 21).Select(i => i / 20.0)];

    /// <summary>Gets or sets the most calibration tokens (rows of the last axis) kept per group for the search: 512 unless set; a uniform sample of all tokens (reservoir sampling with a fixed seed), so memory does not grow with the data.</summary>
    public int SearchRows { get; set; } = 512;

    /// <summary>
    /// Gets or sets the activations' scheme the search quantizes the layers' inputs with, per tensor over the calibrated
    /// range of the scaled input (or the sample's range, see <see cref="DynamicActivations"/>): asymmetric uint8 (as <see cref="OnnxStaticQuantizationOptions.ActivationScheme"/>) unless
    /// set. Weights are quantized as the static quantizer does by default: symmetric int8 per output channel.
    /// </summary>
    /// <exception cref="ArgumentNullException">The value is <see langword="null"/>.</exception>
    public QuantizationScheme ActivationScheme
    {
        get => _activationScheme;
        set => _activationScheme = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>
    /// Gets or sets a value indicating whether the search (<see cref="SearchAlpha"/>) measures activations as dynamic
    /// quantization does: the sampled rows of X / s quantized per tensor over their own range (min and max of the sample),
    /// instead of over the calibrated range of X / s as static quantization fixes it. Off unless set; set it when the
    /// smoothed model goes to a dynamic quantizer other than <see cref="OnnxDynamicQuantizer.QuantizeAsync"/>, which
    /// always searches this way.
    /// </summary>
    public bool DynamicActivations { get; set; }

    /// <summary>
    /// Gets or sets a value indicating whether groups whose producer cannot take 1/s exactly (a Gelu, a Reshape, a graph
    /// input; see <see cref="OnnxScaleProducerKind.ExplicitScale"/>) are smoothed too, by a new Mul of their input by
    /// the constant 1/s that feeds only the group's layers: one more elementwise operator per such group, which keeps
    /// the float model's outputs. Off unless set: such groups are then skipped with the reason. <see cref="OtherConsumers"/>
    /// still applies first: with <see cref="OnnxOtherConsumerPolicy.Skip"/>, a group whose input is read elsewhere is skipped.
    /// </summary>
    public bool ExplicitScales { get; set; }

    /// <summary>Gets or sets what happens when a group's input is also read outside the group (a residual Add, a graph output): <see cref="OnnxOtherConsumerPolicy.Compensate"/> unless set.</summary>
    public OnnxOtherConsumerPolicy OtherConsumers { get; set; } = OnnxOtherConsumerPolicy.Compensate;

    /// <summary>Gets node-name patterns of the MatMul/Gemm layers to smooth; when empty, every one is. A group is smoothed only when all its layers are selected.</summary>
    public IList<NamePattern> IncludeNodes { get; } = [];

    /// <summary>Gets node-name patterns of MatMul/Gemm layers to leave alone; they win over <see cref="IncludeNodes"/>, and leave their whole group alone.</summary>
    public IList<NamePattern> ExcludeNodes { get; } = [];

    /// <summary>Gets how calibration data runs through ONNX Runtime.</summary>
    public OnnxCalibrationOptions Calibration { get; } = new();

    /// <summary>Checks the rules.</summary>
    /// <exception cref="ArgumentOutOfRangeException">α, a grid value or the row count is out of range, or the policy is not a defined value.</exception>
    /// <exception cref="ArgumentException">The grid is empty while the search is on, or the activation scheme is not int8 or uint8 per tensor.</exception>
    internal void Validate()
    {
        if (!(Alpha is >= 0 and <= 1))
        {
            throw new ArgumentOutOfRangeException("options", Alpha, "Alpha must be in [0, 1].");
        }

        foreach (double alpha in AlphaGrid)
        {
            if (!(alpha is >= 0 and <= 1))
            {
                throw new ArgumentOutOfRangeException("options", alpha, "Every AlphaGrid value must be in [0, 1].");
            }
        }

        if (SearchAlpha && AlphaGrid.Count == 0)
        {
            throw new ArgumentException("SearchAlpha needs at least one value in AlphaGrid.", "options");
        }

        if (SearchRows < 1)
        {
            throw new ArgumentOutOfRangeException("options", SearchRows, "SearchRows must be at least 1.");
        }

        if (!Enum.IsDefined(OtherConsumers))
        {
            throw new ArgumentOutOfRangeException("options", OtherConsumers, "Unknown policy for other consumers.");
        }

        if (ActivationScheme.Granularity.Kind != GranularityKind.PerTensor || ActivationScheme.Type is not (QuantizedType.Int8 or QuantizedType.UInt8))
        {
            throw new ArgumentException($"The search quantizes activations as QDQ does, int8 or uint8 per tensor; the activation scheme is {ActivationScheme}.", "options");
        }
    }

    /// <summary>Whether an include pattern (if any) matches the node's name and no exclude pattern does.</summary>
    internal bool SelectsName(NodeProto node) => node.IsSelectedBy(IncludeNodes, ExcludeNodes);
}
