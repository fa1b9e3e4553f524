using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Settings of activation-aware weight quantization (<see cref="OnnxAwq"/>, or <see cref="OnnxWeightQuantizationOptions.Awq"/>
/// inside <see cref="OnnxWeightQuantizer.QuantizeAsync"/>): the grid of exponents for the input-channel scales, the
/// weight-clipping search, and how much calibration data each search keeps.
/// </summary>
public sealed class AwqOptions
{
    /// <summary>
    /// Gets or sets the weight scheme the searches quantize with, or <see langword="null"/>: per group means groups of
    /// consecutive input features (along K) of one output channel, whatever axis the scheme names; per channel means per
    /// output channel; per tensor is allowed. Required by <see cref="OnnxAwq.ApplyAsync(OnnxModel, ICalibrationDataSource{IReadOnlyCollection{Microsoft.ML.OnnxRuntime.NamedOnnxValue}}, AwqOptions, IProgress{CalibrationProgress}?, CancellationToken)"/>; must stay
    /// <see langword="null"/> under <see cref="OnnxWeightQuantizer"/>, which searches with the scheme it quantizes each
    /// weight with (its MatMulNBits blocks when those are set).
    /// </summary>
    public QuantizationScheme? Scheme { get; set; }

    /// <summary>Gets the exponents α of the scales s = mean|x|^α that the search tries: 0, 0.05, …, 0.95 (i / 20 for i = 0 … 19) unless changed; each in [0, 1]. Ties go to the smaller α; α = 0 leaves the weights unscaled.</summary>
    public IList<double> AlphaGrid { get; } = [.. Enumerable.Range(0, 20).Select(i => i / 20.0)];

    /// <summary>
    /// Gets or sets a value indicating whether the scales also divide by the weights' magnitude ("duo" scaling, as
    /// AutoAWQ does by default): s_j = a_j^α / (w_j^(1−α) + 1e-4), with w_j the mean over the layers' output rows of
    /// |w_nj| relative to the largest |w| of its quantization group; off unless set (then s_j = a_j^α, the paper's form).
    /// </summary>
    public bool DuoScaling { get; set; }

    /// <summary>Gets or sets a value indicating whether each weight's groups are clipped after scaling (the search over <see cref="ClipRatios"/>); on unless set.</summary>
    public bool Clip { get; set; } = true;

    /// <summary>Gets the fractions of each group's largest |w| that the clipping search tries: 1, 0.95, …, 0.55 unless changed; each in (0, 1]. Ties go to the earlier fraction (1 keeps the group as it is).</summary>
    public IList<double> ClipRatios { get; } = [.. Enumerable.Range(0, 10).Select(i => 1 - (i / 20.0))];

    /// <summary>
    /// Gets or sets a value indicating whether projections recognised as an attention's queries or keys (their output
    /// reaches, through reshapes and elementwise operators, a MatMul of two computed values whose result goes to a
    /// Softmax) are clipped too; off unless set, as in the reference, since the softmax amplifies their errors.
    /// </summary>
    public bool ClipQueryKey { get; set; }

    /// <summary>Gets or sets the most calibration tokens (rows of the last axis) kept per group for the α search: 512 unless set; a uniform sample of all tokens (reservoir sampling with a fixed seed), so memory does not grow with the data.</summary>
    public int SearchRows { get; set; } = 512;

    /// <summary>Gets or sets the most tokens of that sample the clipping search uses, evenly strided: 512 unless set.</summary>
    public int ClipRows { get; set; } = 512;

    /// <summary>
    /// Gets or sets a value indicating whether groups whose producer cannot take 1/s exactly (a Gelu, a Reshape, a graph
    /// input; see <see cref="OnnxScaleProducerKind.ExplicitScale"/>) are scaled by a new Mul of their input by 1/s that
    /// feeds only the group's layers; on unless set. When off, such groups are skipped with the reason.
    /// </summary>
    public bool ExplicitScales { get; set; } = true;

    /// <summary>Gets or sets what happens when a group's input is also read outside the group (a residual Add, a graph output): <see cref="OnnxOtherConsumerPolicy.Compensate"/> unless set.</summary>
    public OnnxOtherConsumerPolicy OtherConsumers { get; set; } = OnnxOtherConsumerPolicy.Compensate;

    /// <summary>Gets node-name patterns of the MatMul/Gemm layers to scale and clip; when empty, every one is. A group is handled only when all its layers are selected.</summary>
    public IList<NamePattern> IncludeNodes { get; } = [];

    /// <summary>Gets node-name patterns of MatMul/Gemm layers to leave alone; they win over <see cref="IncludeNodes"/>, and leave their whole group alone.</summary>
    public IList<NamePattern> ExcludeNodes { get; } = [];

    /// <summary>Gets how calibration data runs through ONNX Runtime (under <see cref="OnnxWeightQuantizer"/>, its own <see cref="OnnxWeightQuantizationOptions.Calibration"/> applies).</summary>
    public OnnxCalibrationOptions Calibration { get; } = new();

    /// <summary>Checks the rules.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A grid value, a ratio, a row count or the policy is out of range.</exception>
    /// <exception cref="ArgumentException">A grid is empty, or the scheme is not one the searches quantize with.</exception>
    internal void Validate()
    {
        if (AlphaGrid.Count == 0)
        {
            throw new ArgumentException("AlphaGrid needs at least one value.", "options");
        }

        foreach (double alpha in AlphaGrid.Where(a => !(a is >= 0 and <= 1)))
        {
            throw new ArgumentOutOfRangeException("options", alpha, "Every AlphaGrid value must be in [0, 1].");
        }

        if (Clip && ClipRatios.Count == 0)
        {
            throw new ArgumentException("Clip needs at least one value in ClipRatios.", "options");
        }

        foreach (double ratio in ClipRatios.Where(r => !(r is > 0 and <= 1)))
        {
            throw new ArgumentOutOfRangeException("options", ratio, "Every ClipRatios value must be in (0, 1].");
        }

        if (SearchRows < 1 || ClipRows < 1)
        {
            throw new ArgumentOutOfRangeException("options", Math.Min(SearchRows, ClipRows), "SearchRows and ClipRows must be at least 1.");
        }

        if (!Enum.IsDefined(OtherConsumers))
        {
            throw new ArgumentOutOfRangeException("options", OtherConsumers, "Unknown policy for other consumers.");
        }

        if (Scheme is not null && !OnnxAwq.IsSearchable(Scheme))
        {
            throw new ArgumentException($"AwqOptions.Scheme is {Scheme}; AWQ quantizes weights with 8- or 4-bit schemes per tensor, per output channel or per group along the input axis.", "options");
        }
    }

    /// <summary>Whether an include pattern (if any) matches the node's name and no exclude pattern does.</summary>
    internal bool SelectsName(NodeProto node) => node.IsSelectedBy(IncludeNodes, ExcludeNodes);
}
