using System.Diagnostics;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// The GPTQ Hessians H = 2/n Σ x xᵀ of the inputs of MatMul, Gemm and Conv nodes, collected while calibration data runs
/// through the model. A Conv's inputs are unfolded into patches (im2col, <see cref="ConvPatches"/>), one Hessian per group
/// of the Conv; convolutions of more than two spatial axes, and per-tensor weights of grouped convolutions, are left to
/// rounding to nearest.
/// </summary>
internal sealed class GptqHessians : IActivationRecorder
{
    private readonly Dictionary<string, HessianAccumulator> _inputs = new(StringComparer.Ordinal);

    /// <summary>The unfolded Conv inputs by input name: two Convs reading one tensor (a residual block's 3×3 and its 1×1 shortcut) unfold it differently.</summary>
    private readonly Dictionary<string, List<ConvHessian>> _convInputs = new(StringComparer.Ordinal);

    /// <summary>The Conv Hessians by node; protobuf messages compare by value, so a copy of the graph finds them too.</summary>
    private readonly Dictionary<NodeProto, ConvHessian> _convs = [];

    /// <summary>Gets the names of the tensors whose Hessians are collected.</summary>
    public IEnumerable<string> TensorNames => _inputs.Keys.Union(_convInputs.Keys, StringComparer.Ordinal);

    /// <summary>Whether GPTQ can quantize this node's weight: a MatMul with a 2-D weight, or a Gemm without transA.</summary>
    public static bool Supports(NodeProto node, int weightRank) =>
        weightRank == 2 && (node.OpType == "MatMul" || (node.OpType == "Gemm" && node.FindAttribute("transA")?.I is null or 0));

    /// <summary>Collects the Hessian of a node's input, whose last axis has <paramref name="features"/> values.</summary>
    public void Track(NodeProto node, int features)
    {
        if (!_inputs.ContainsKey(node.Input[0]))
        {
            _inputs.Add(node.Input[0], new HessianAccumulator(features));
        }
    }

    /// <summary>
    /// Collects the Hessians of a Conv node's unfolded input, for a weight of the given shape and scheme (which decides
    /// the patch layout); returns the reason when the node is left to rounding to nearest.
    /// </summary>
    public string? TrackConv(NodeProto node, IReadOnlyList<long> weightShape, QuantizationScheme scheme)
    {
        int blockSize = scheme.Granularity.Kind == GranularityKind.PerGroup ? scheme.Granularity.GroupSize : 0;
        if (ConvPatches.Create(node, weightShape, blockSize, out string? reason) is not ConvPatches patches)
        {
            return reason;
        }

        if (scheme.Granularity.Kind == GranularityKind.PerTensor && patches.Groups > 1)
        {
            return "a per-tensor weight of a grouped convolution has one scale across the groups' separate problems";
        }

        if (!_convs.ContainsKey(node))
        {
            ConvHessian conv = new(patches, [.. Enumerable.Range(0, patches.Groups).Select(_ => new HessianAccumulator(patches.Features))]);
            _convs.Add(node, conv);
            (_convInputs.TryGetValue(node.Input[0], out List<ConvHessian>? list) ? list : _convInputs[node.Input[0]] = []).Add(conv);
        }

        return null;
    }

    /// <inheritdoc/>
    public void Record(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape)
    {
        if (_inputs.TryGetValue(name, out HessianAccumulator? hessian))
        {
            hessian.Add(values, shape, name);
        }

        if (_convInputs.TryGetValue(name, out List<ConvHessian>? convs))
        {
            foreach (ConvHessian conv in convs)
            {
                conv.Patches.Accumulate(values, shape, conv.Groups, name);
            }
        }
    }

    /// <summary>Gets the Hessian of a node's input, if it was collected and saw data.</summary>
    public HessianAccumulator? For(NodeProto node) =>
        _inputs.TryGetValue(node.Input[0], out HessianAccumulator? hessian) && hessian.Rows > 0 ? hessian : null;

    /// <summary>
    /// Quantizes a Conv weight [M, C / group, kh, kw] by GPTQ against its unfolded input's Hessians, or returns
    /// <see langword="null"/> when the node was not tracked or saw no data. The weight is permuted into rows of patch
    /// features, each group's rows are quantized against its group's Hessian (per channel, or per block of patch features:
    /// exactly the weight's blocks along axis 1 at each kernel position), and the result is permuted back and stored with
    /// the parameters rounding to nearest (or the range search) gives the weight in its own layout, which are the same numbers.
    /// </summary>
    /// <param name="node">The Conv node.</param>
    /// <param name="weight">The weight, row-major.</param>
    /// <param name="shape">Its shape.</param>
    /// <param name="scheme">Its scheme in the weight's layout: per tensor, per channel on axis 0, or blocks along axis 1.</param>
    /// <param name="options">The GPTQ settings; the input axis is the rows' (1).</param>
    /// <param name="name">The weight's name.</param>
    /// <param name="cancellationToken">Cancels the quantization.</param>
    public QuantizedTensor? QuantizeConv(NodeProto node, float[] weight, int[] shape, QuantizationScheme scheme, GptqOptions options, string name, CancellationToken cancellationToken)
    {
        if (!_convs.TryGetValue(node, out ConvHessian? conv) || conv.Groups.Any(h => h.Rows == 0))
        {
            return null;
        }

        ConvPatches patches = conv.Patches;
        QuantizationScheme rowScheme = scheme.Granularity.Kind switch
        {
            GranularityKind.PerChannel => scheme.WithGranularity(QuantizationGranularity.PerChannel(0)),
            GranularityKind.PerGroup => scheme.WithGranularity(QuantizationGranularity.PerGroup(patches.BlockSize, axis: 1)),
            _ => scheme,
        };
        float[] rows = patches.ToRows(weight);
        float[] restoredRows = new float[rows.Length];
        int groupRows = patches.Outputs / patches.Groups, features = patches.Features;
        for (int group = 0; group < patches.Groups; group++)
        {
            Range slice = new(group * groupRows * features, (group + 1) * groupRows * features);
            QuantizedTensor quantized = GptqQuantizer.Quantize(rows.AsSpan(slice), [groupRows, features], rowScheme, conv.Groups[group], options, name, cancellationToken);
            quantized.Dequantize(restoredRows.AsSpan(slice));
        }

        // GPTQ kept rounding to nearest's parameters, which for the rows are the weight's own, permuted: the restored values
        // are codes times those scales, so quantizing them again with the weight's parameters gives the codes back.
        QuantizationParameters parameters = (options.RangeSearch?.Quantize(weight, shape, scheme, name) ?? QuantizedTensor.Quantize(weight, shape, scheme, name)).Parameters;
        float[] restored = patches.FromRows(restoredRows);
        QuantizedTensor result = QuantizedTensor.Quantize(restored, shape, scheme, parameters, name);
        Debug.Assert(result.Dequantize().AsSpan().SequenceEqual(restored), "The rows' parameters are the weight's.");
        return result;
    }

    /// <summary>A Conv's unfolding and its Hessians, one per group.</summary>
    private sealed record ConvHessian(ConvPatches Patches, HessianAccumulator[] Groups);
}
