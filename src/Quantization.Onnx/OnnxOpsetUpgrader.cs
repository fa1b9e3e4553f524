using System.Buffers.Binary;
using System.Collections.Frozen;

using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Raises the default-domain (<c>ai.onnx</c>) operator set a model imports, from opset 7 or later up to a target of 13 to 21,
/// without changing what the model computes. Opset 13 is what per-axis <c>DequantizeLinear</c> needs, so older published
/// models must pass through here before <see cref="OnnxWeightQuantizer"/> can quantize them; opset 21 is what int4 and
/// blocked <c>DequantizeLinear</c> need.
/// </summary>
/// <remarks>
/// <para>
/// The upgrade is driven by one table. Each known operator type has the opset from which its meaning stays the same up to
/// opset 17 (later versions only added types, optional inputs or attributes whose defaults keep the old behaviour), and
/// optionally an adapter that rewrites a node of an older version into the newer form. Nodes whose version is already
/// stable are kept as they are; older ones go through their adapter. A second, shorter table holds the operators of the
/// first whose meaning changed between opsets 18 and 21, applied when the target reaches the change:
/// </para>
/// <list type="bullet">
/// <item><description>BatchNormalization (9): <c>spatial</c> = 1 or absent is dropped (0 is rejected), so are <c>is_test</c> and <c>consumed_inputs</c>; unused training outputs are removed (opset 14 allows them only in training mode).</description></item>
/// <item><description>Split, Squeeze, Unsqueeze, ReduceSum (13): the <c>split</c> / <c>axes</c> attribute becomes an int64 input.</description></item>
/// <item><description>Slice (10): <c>starts</c>, <c>ends</c>, <c>axes</c> become inputs. TopK (10): <c>k</c> becomes an input.</description></item>
/// <item><description>Pad (11): <c>pads</c> and <c>value</c> become inputs. Clip (11): <c>min</c> and <c>max</c> become inputs.</description></item>
/// <item><description>Dropout (12): an inference no-op, becomes Identity (a node whose mask output is used is rejected).</description></item>
/// <item><description>Upsample (any) and Resize-10: become Resize with <c>coordinate_transformation_mode</c> = asymmetric and, for nearest, <c>nearest_mode</c> = floor, which is how the old operators sampled.</description></item>
/// <item><description>Softmax, LogSoftmax, Hardmax (13): the old "flatten to 2-D at <c>axis</c>" becomes Flatten, the operator on the last axis, and a Reshape back to the input's shape, unless <c>axis</c> is known to be the last one.</description></item>
/// <item><description>Scatter (any): becomes ScatterElements, which has the same inputs and meaning.</description></item>
/// <item><description>ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare (18): the <c>axes</c> attribute becomes an int64 input, as ReduceSum's did at 13.</description></item>
/// <item><description>Split (18): without a <c>split</c> input, the equal split into as many parts as outputs is stated with <c>num_outputs</c>, which opset 18 asks for.</description></item>
/// </list>
/// <para>
/// Every other operator of the table was checked against the changes of opsets 18 to 21 (ONNX 1.13 to 1.16): they added
/// types (float8, int4, uint4), optional inputs or attributes whose defaults keep the old meaning (Pad's <c>axes</c>,
/// Resize's <c>antialias</c>, the pools' <c>dilations</c> and <c>ceil_mode</c>, Cast's <c>saturate</c>, the reductions'
/// <c>noop_with_empty_axes</c>, QuantizeLinear's <c>output_dtype</c> and <c>block_size</c>), or nothing.
/// </para>
/// <para>
/// Constant inputs that adapters add are new initializers whose names collide with no name in the model. Subgraphs
/// (graph attributes of If, Loop and of nodes in other domains) are upgraded the same way. Nodes in other domains are
/// otherwise left alone. Any default-domain operator that is neither stable nor adaptable is refused, never guessed.
/// </para>
/// </remarks>
public static class OnnxOpsetUpgrader
{
    /// <summary>The oldest default-domain opset a model may import to be upgraded.</summary>
    public const long OldestSupportedOpset = 7;

    /// <summary>The lowest target opset (the first with per-axis DequantizeLinear).</summary>
    public const long MinimumTargetOpset = 13;

    /// <summary>The highest target opset the operator tables have been checked against.</summary>
    public const long MaximumTargetOpset = 21;

    /// <summary>Rewrites a node of an older version into nodes of the target opset; may add initializers through the context.</summary>
    private delegate IEnumerable<NodeProto> Adapter(NodeProto node, UpgradeContext context);

    /// <summary>
    /// What is known of an operator: the opset from which its meaning is unchanged through opset 17, and the adapter for a
    /// node of an older version (none: such a node cannot be upgraded, or the operator did not exist yet).
    /// </summary>
    private sealed record Rule(int StableFrom, Adapter? Adapt = null);

    /// <summary>An opset no model version reaches: the operator is always rewritten (it is deprecated or removed).</summary>
    private const int Never = int.MaxValue;

    private static readonly FrozenDictionary<string, Rule> Rules = new Dictionary<string, Rule>(StringComparer.Ordinal)
    {
        // Element-wise math and activations. Versions after 7 only added types (13, 14: bfloat16, integer types).
        ["Abs"] = new(1),
        ["Neg"] = new(1),
        ["Reciprocal"] = new(1),
        ["Floor"] = new(1),
        ["Ceil"] = new(1),
        ["Round"] = new(11),
        ["Sqrt"] = new(1),
        ["Exp"] = new(1),
        ["Log"] = new(1),
        ["Pow"] = new(7),
        ["Erf"] = new(9),
        ["Sign"] = new(9),
        ["Sin"] = new(7),
        ["Cos"] = new(7),
        ["Tan"] = new(7),
        ["Asin"] = new(7),
        ["Acos"] = new(7),
        ["Atan"] = new(7),
        ["Sinh"] = new(9),
        ["Cosh"] = new(9),
        ["Asinh"] = new(9),
        ["Acosh"] = new(9),
        ["Atanh"] = new(9),
        ["Relu"] = new(1),
        ["LeakyRelu"] = new(1),
        ["PRelu"] = new(7),
        ["Elu"] = new(1),
        ["Selu"] = new(1),
        ["Celu"] = new(12),
        ["Sigmoid"] = new(1),
        ["HardSigmoid"] = new(1),
        ["Tanh"] = new(1),
        ["Softplus"] = new(1),
        ["Softsign"] = new(1),
        ["ThresholdedRelu"] = new(10),
        ["Shrink"] = new(9),
        ["Add"] = new(7),
        ["Sub"] = new(7),
        ["Mul"] = new(7),
        ["Div"] = new(7),
        ["Mod"] = new(10),
        ["Sum"] = new(6),
        ["Mean"] = new(6),
        ["Max"] = new(6),
        ["Min"] = new(6), // 8 only added broadcasting
        ["Equal"] = new(7),
        ["Greater"] = new(7),
        ["Less"] = new(7),
        ["GreaterOrEqual"] = new(12),
        ["LessOrEqual"] = new(12),
        ["And"] = new(7),
        ["Or"] = new(7),
        ["Xor"] = new(7),
        ["Not"] = new(1),
        ["Where"] = new(9),
        ["IsNaN"] = new(9),
        ["IsInf"] = new(10),
        ["BitShift"] = new(11),

        // Linear algebra, convolution, pooling, normalization. Opset 10 and 11 versions of the pools and convolutions
        // added attributes (ceil_mode, dilations) whose defaults keep the old meaning, or clarified the text.
        ["MatMul"] = new(1),
        ["Gemm"] = new(7),
        ["MatMulInteger"] = new(10),
        ["Einsum"] = new(12),
        ["Conv"] = new(1),
        ["ConvTranspose"] = new(1),
        ["ConvInteger"] = new(10),
        ["QLinearConv"] = new(10),
        ["QLinearMatMul"] = new(10),
        ["QuantizeLinear"] = new(10),
        ["DequantizeLinear"] = new(10),
        ["DynamicQuantizeLinear"] = new(11),
        ["MaxPool"] = new(1),
        ["AveragePool"] = new(7),
        ["LpPool"] = new(2),
        ["MaxUnpool"] = new(9),
        ["GlobalAveragePool"] = new(1),
        ["GlobalMaxPool"] = new(1),
        ["GlobalLpPool"] = new(2),
        ["MaxRoiPool"] = new(1),
        ["InstanceNormalization"] = new(6),
        ["LRN"] = new(1),
        ["LpNormalization"] = new(1),
        ["MeanVarianceNormalization"] = new(9),
        ["BatchNormalization"] = new(14, BatchNormalization),

        // Recurrent layers: opset 14 added `layout`, whose default 0 is the old layout.
        ["RNN"] = new(7),
        ["GRU"] = new(7),
        ["LSTM"] = new(7),

        // Reductions other than ReduceSum keep `axes` as an attribute until opset 18.
        ["ReduceMean"] = new(1),
        ["ReduceMax"] = new(1),
        ["ReduceMin"] = new(1),
        ["ReduceProd"] = new(1),
        ["ReduceL1"] = new(1),
        ["ReduceL2"] = new(1),
        ["ReduceLogSum"] = new(1),
        ["ReduceLogSumExp"] = new(1),
        ["ReduceSumSquare"] = new(1),
        ["ArgMax"] = new(1),
        ["ArgMin"] = new(1),
        ["CumSum"] = new(11),
        ["ReduceSum"] = new(13, AxesToInput),
        ["Squeeze"] = new(13, AxesToInput),
        ["Unsqueeze"] = new(13, AxesToInput),

        // Shapes, indexing and data movement.
        ["Reshape"] = new(5),
        ["Flatten"] = new(1),
        ["Transpose"] = new(1),
        ["Concat"] = new(4),
        ["Shape"] = new(1),
        ["Size"] = new(1),
        ["Expand"] = new(8),
        ["Tile"] = new(6),
        ["Gather"] = new(1),
        ["GatherElements"] = new(11),
        ["GatherND"] = new(11),
        ["ScatterElements"] = new(11),
        ["ScatterND"] = new(11),
        ["NonZero"] = new(9),
        ["OneHot"] = new(9),
        ["Compress"] = new(9),
        ["DepthToSpace"] = new(1),
        ["SpaceToDepth"] = new(1),
        ["ReverseSequence"] = new(10),
        ["Range"] = new(11),
        ["Unique"] = new(11),
        ["Identity"] = new(1),
        ["Cast"] = new(6),
        ["Constant"] = new(1),
        ["ConstantOfShape"] = new(9),
        ["EyeLike"] = new(9),
        ["Split"] = new(13, SplitToInput),
        ["Slice"] = new(10, SliceToInputs),
        ["Pad"] = new(11, PadToInputs),
        ["Clip"] = new(11, ClipToInputs),
        ["TopK"] = new(10, TopKToInput),
        ["Dropout"] = new(12, DropoutToIdentity),
        ["Resize"] = new(11, UpsampleToResize),
        ["Upsample"] = new(Never, UpsampleToResize),
        ["Scatter"] = new(Never, ScatterToScatterElements),
        ["Softmax"] = new(13, SoftmaxOnLastAxis),
        ["LogSoftmax"] = new(13, SoftmaxOnLastAxis),
        ["Hardmax"] = new(13, SoftmaxOnLastAxis),

        // Control flow: later versions only widened the types a branch or body may carry; subgraphs are upgraded too.
        ["If"] = new(1),
        ["Loop"] = new(1),
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>
    /// Operators of <see cref="Rules"/> whose meaning changed after opset 17: the version of the change and the adapter
    /// that rewrites a node of an earlier version, applied when the target reaches that version.
    /// </summary>
    private static readonly FrozenDictionary<string, (int Version, Adapter Adapt)> LaterChanges = new Dictionary<string, (int, Adapter)>(StringComparer.Ordinal)
    {
        ["ReduceMean"] = (18, AxesToInput),
        ["ReduceMax"] = (18, AxesToInput),
        ["ReduceMin"] = (18, AxesToInput),
        ["ReduceProd"] = (18, AxesToInput),
        ["ReduceL1"] = (18, AxesToInput),
        ["ReduceL2"] = (18, AxesToInput),
        ["ReduceLogSum"] = (18, AxesToInput),
        ["ReduceLogSumExp"] = (18, AxesToInput),
        ["ReduceSumSquare"] = (18, AxesToInput),
        ["Split"] = (18, SplitOutputCount),
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Operators whose first output has the element type of their first input, to find the type of a value no value_info declares.</summary>
    private static readonly FrozenSet<string> TypePreserving = FrozenSet.ToFrozenSet(
    [
        "Abs", "Add", "AveragePool", "BatchNormalization", "Ceil", "Clip", "Concat", "Conv", "ConvTranspose", "Div", "Dropout",
        "Elu", "Exp", "Expand", "Flatten", "Floor", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "Identity",
        "InstanceNormalization", "LeakyRelu", "Log", "LogSoftmax", "LRN", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mul", "Neg", "Pad",
        "Pow", "PRelu", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Resize", "Selu", "Sigmoid",
        "Slice", "Softmax", "Softplus", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "Transpose", "Unsqueeze", "Upsample",
    ], StringComparer.Ordinal);

    /// <summary>
    /// Upgrades the model in place to import <paramref name="targetOpset"/> of the default domain, with unchanged
    /// semantics, and raises its IR version to at least 7 (8 for targets of 15 to 18, 9 for 19 and 20, 10 for 21). A model
    /// that already imports the target or a later opset is left untouched.
    /// </summary>
    /// <param name="model">The model, changed in place only when the whole upgrade succeeds; on an exception it is left as it was.</param>
    /// <param name="targetOpset">The default-domain opset to import afterwards, 13 to 21; 13 by default.</param>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="targetOpset"/> is not between 13 and 21.</exception>
    /// <exception cref="NotSupportedException">
    /// The model imports an opset older than 7, or a default-domain node has no known upgrade (its operator is not in the
    /// table, did not exist at the model's opset, or uses a form with no equivalent, such as BatchNormalization with
    /// <c>spatial</c> = 0); the message names the node, the operator and the versions.
    /// </exception>
    public static void Upgrade(OnnxModel model, long targetOpset = MinimumTargetOpset)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(targetOpset, MinimumTargetOpset);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(targetOpset, MaximumTargetOpset);
        long opset = model.Opset;
        if (opset >= targetOpset)
        {
            return;
        }

        if (opset < OldestSupportedOpset)
        {
            throw new NotSupportedException(FormattableString.Invariant(
                $"The model imports default-domain opset {opset}; upgrading needs opset {OldestSupportedOpset} or later (older operator versions differ too much)."));
        }

        // The graph is rewritten on a copy and swapped in only when every node has been upgraded, so a model that cannot
        // be upgraded is left as it was.
        ModelProto proto = model.Proto;
        GraphProto graph = proto.Graph.Clone();
        Names names = new(graph);
        UpgradeGraph(new UpgradeContext(graph, null, opset, targetOpset, names));
        proto.Graph = graph;
        foreach (OperatorSetIdProto import in proto.OpsetImport.Where(o => o.Domain is "" or "ai.onnx"))
        {
            import.Version = targetOpset;
        }

        proto.IrVersion = Math.Max(proto.IrVersion, targetOpset switch { >= 21 => 10, >= 19 => 9, >= 15 => 8, _ => 7 });
    }

    /// <summary>Rewrites every node of one graph (subgraphs first), keeping the node order topological.</summary>
    private static void UpgradeGraph(UpgradeContext context)
    {
        List<NodeProto> upgraded = new(context.Graph.Node.Count);
        foreach (NodeProto node in context.Graph.Node)
        {
            foreach (AttributeProto attribute in node.Attribute)
            {
                IEnumerable<GraphProto> subgraphs = attribute.G is null ? attribute.Graphs : attribute.Graphs.Prepend(attribute.G);
                foreach (GraphProto subgraph in subgraphs)
                {
                    UpgradeGraph(context with { Graph = subgraph, Parent = context });
                }
            }

            if (node.Domain is not ("" or "ai.onnx"))
            {
                upgraded.Add(node);
                continue;
            }

            if (!Rules.TryGetValue(node.OpType, out Rule? rule))
            {
                throw Unsupported(node, context, "is not in the upgrader's table of operators known to keep their meaning or to have an adapter");
            }

            IEnumerable<NodeProto> adapted;
            if (context.ModelOpset >= rule.StableFrom)
            {
                adapted = [node];
            }
            else if (rule.Adapt is not null)
            {
                adapted = rule.Adapt(node, context);
            }
            else
            {
                throw Unsupported(node, context, FormattableString.Invariant($"is not defined before opset {rule.StableFrom}"));
            }

            foreach (NodeProto next in adapted)
            {
                upgraded.AddRange(LaterChanges.TryGetValue(next.OpType, out (int Version, Adapter Adapt) change) && context.ModelOpset < change.Version && context.TargetOpset >= change.Version
                    ? change.Adapt(next, context)
                    : [next]);
            }
        }

        context.Graph.Node.Clear();
        context.Graph.Node.AddRange(upgraded);
    }

    /// <summary>BatchNormalization before 9 (<c>spatial</c>) and before 14 (training outputs).</summary>
    private static IEnumerable<NodeProto> BatchNormalization(NodeProto node, UpgradeContext context)
    {
        AttributeProto? spatial = node.FindAttribute("spatial");
        if (spatial is not null && spatial.I != 1)
        {
            throw Unsupported(node, context, FormattableString.Invariant(
                $"has spatial = {spatial.I}: statistics per activation rather than per channel have no equivalent from opset 9 on"));
        }

        Remove(node, "spatial", "is_test", "consumed_inputs");
        KeepOutputs(node, 1, context, "its running and saved statistics are training outputs, which opset 14 allows only in training mode");
        yield return node;
    }

    /// <summary>Squeeze, Unsqueeze and ReduceSum before 13, the other reductions before 18: the <c>axes</c> attribute becomes the second input.</summary>
    private static IEnumerable<NodeProto> AxesToInput(NodeProto node, UpgradeContext context)
    {
        AttributeProto? axes = Take(node, "axes");
        if (axes is not null)
        {
            SetInput(node, 1, context.AddInt64s(node, "axes", [.. axes.Ints]));
        }

        yield return node;
    }

    /// <summary>Split before 13: the <c>split</c> attribute becomes the second input.</summary>
    private static IEnumerable<NodeProto> SplitToInput(NodeProto node, UpgradeContext context)
    {
        AttributeProto? split = Take(node, "split");
        if (split is not null)
        {
            SetInput(node, 1, context.AddInt64s(node, "split", [.. split.Ints]));
        }

        yield return node;
    }

    /// <summary>Split before 18 without a <c>split</c> input: the equal split into one part per output becomes <c>num_outputs</c>.</summary>
    private static IEnumerable<NodeProto> SplitOutputCount(NodeProto node, UpgradeContext context)
    {
        if ((node.Input.Count < 2 || node.Input[1].Length == 0) && node.FindAttribute("num_outputs") is null)
        {
            node.Attribute.Add(IntAttribute("num_outputs", node.Output.Count));
        }

        yield return node;
    }

    /// <summary>Slice before 10: <c>starts</c>, <c>ends</c> and <c>axes</c> become inputs 1 to 3.</summary>
    private static IEnumerable<NodeProto> SliceToInputs(NodeProto node, UpgradeContext context)
    {
        AttributeProto starts = Take(node, "starts") ?? throw Unsupported(node, context, "has no starts attribute");
        AttributeProto ends = Take(node, "ends") ?? throw Unsupported(node, context, "has no ends attribute");
        AttributeProto? axes = Take(node, "axes");
        SetInput(node, 1, context.AddInt64s(node, "starts", [.. starts.Ints]));
        SetInput(node, 2, context.AddInt64s(node, "ends", [.. ends.Ints]));
        if (axes is not null)
        {
            SetInput(node, 3, context.AddInt64s(node, "axes", [.. axes.Ints]));
        }

        yield return node;
    }

    /// <summary>Pad before 11: <c>pads</c> becomes input 1 and a non-zero <c>value</c> input 2, of the data's element type.</summary>
    private static IEnumerable<NodeProto> PadToInputs(NodeProto node, UpgradeContext context)
    {
        AttributeProto pads = Take(node, "pads") ?? throw Unsupported(node, context, "has no pads attribute");
        AttributeProto? value = Take(node, "value");
        SetInput(node, 1, context.AddInt64s(node, "pads", [.. pads.Ints]));
        if (value is not null && value.F != 0)
        {
            SetInput(node, 2, context.AddScalar(node, "constant_value", node.Input[0], value.F));
        }

        yield return node;
    }

    /// <summary>Clip before 11: the <c>min</c> and <c>max</c> attributes become inputs 1 and 2, of the input's element type.</summary>
    private static IEnumerable<NodeProto> ClipToInputs(NodeProto node, UpgradeContext context)
    {
        AttributeProto? min = Take(node, "min");
        AttributeProto? max = Take(node, "max");
        if (min is not null)
        {
            SetInput(node, 1, context.AddScalar(node, "min", node.Input[0], min.F));
        }

        if (max is not null)
        {
            SetInput(node, 2, context.AddScalar(node, "max", node.Input[0], max.F));
        }

        yield return node;
    }

    /// <summary>TopK before 10: the <c>k</c> attribute becomes the second input, a one-element int64 tensor.</summary>
    private static IEnumerable<NodeProto> TopKToInput(NodeProto node, UpgradeContext context)
    {
        AttributeProto k = Take(node, "k") ?? throw Unsupported(node, context, "has no k attribute");
        SetInput(node, 1, context.AddInt64s(node, "k", [k.I]));
        yield return node;
    }

    /// <summary>Dropout before 12: in inference it passes its input through, so it becomes Identity.</summary>
    private static IEnumerable<NodeProto> DropoutToIdentity(NodeProto node, UpgradeContext context)
    {
        KeepOutputs(node, 1, context, "its mask output has a different type and meaning in later versions");
        node.OpType = "Identity";
        node.Attribute.Clear();
        yield return node;
    }

    /// <summary>
    /// Upsample (7, 9, 10) and Resize-10 to Resize: the old operators map output index i to input coordinate i / scale
    /// (asymmetric) and, for nearest, take the floor of it.
    /// </summary>
    private static IEnumerable<NodeProto> UpsampleToResize(NodeProto node, UpgradeContext context)
    {
        string mode = node.FindAttribute("mode")?.S.ToStringUtf8() ?? "nearest";
        if (mode is not ("nearest" or "linear"))
        {
            throw Unsupported(node, context, $"has mode '{mode}'");
        }

        AttributeProto? scalesAttribute = Take(node, "scales");
        string scales = scalesAttribute is not null
            ? context.AddFloats(node, "scales", [.. scalesAttribute.Floats])
            : node.Input.Count > 1 && node.Input[1].Length > 0 ? node.Input[1] : throw Unsupported(node, context, "has no scales");

        // Resize from 13 on: X, roi (optional, only for tf_crop_and_resize), scales, sizes.
        string input = node.Input[0];
        node.OpType = "Resize";
        node.Input.Clear();
        node.Input.Add([input, string.Empty, scales]);
        node.Attribute.Clear();
        node.Attribute.Add(StringAttribute("mode", mode));
        node.Attribute.Add(StringAttribute("coordinate_transformation_mode", "asymmetric"));
        if (mode == "nearest")
        {
            node.Attribute.Add(StringAttribute("nearest_mode", "floor"));
        }

        yield return node;
    }

    /// <summary>Scatter (deprecated in 11, gone from 13): ScatterElements has the same inputs, attribute and meaning.</summary>
    private static IEnumerable<NodeProto> ScatterToScatterElements(NodeProto node, UpgradeContext context)
    {
        node.OpType = "ScatterElements";
        yield return node;
    }

    /// <summary>
    /// Softmax, LogSoftmax and Hardmax before 13 work on the input flattened to 2-D at <c>axis</c> (default 1); from 13 on
    /// they work on one axis (default -1). Unless the axis is known to be the last, the old meaning is kept as
    /// Flatten(axis), the operator on axis -1, and a Reshape to the input's shape.
    /// </summary>
    private static IEnumerable<NodeProto> SoftmaxOnLastAxis(NodeProto node, UpgradeContext context)
    {
        long axis = Take(node, "axis")?.I ?? 1;
        int? rank = context.RankOf(node.Input[0]);
        if (rank is int r && (axis == -1 || axis == r - 1))
        {
            node.Attribute.Add(IntAttribute("axis", -1));
            yield return node;
            yield break;
        }

        string input = node.Input[0], output = node.Output[0], stem = Stem(node);
        string flat = context.Names.Fresh(stem + "_flat"), result2D = context.Names.Fresh(stem + "_2d"), shape = context.Names.Fresh(stem + "_shape");
        yield return new NodeProto { Name = context.Names.Fresh(stem + "_Flatten"), OpType = "Flatten", Input = { input }, Output = { flat }, Attribute = { IntAttribute("axis", axis) } };
        node.Input[0] = flat;
        node.Output[0] = result2D;
        node.Attribute.Add(IntAttribute("axis", -1));
        yield return node;
        yield return new NodeProto { Name = context.Names.Fresh(stem + "_Shape"), OpType = "Shape", Input = { input }, Output = { shape } };
        yield return new NodeProto { Name = context.Names.Fresh(stem + "_Reshape"), OpType = "Reshape", Input = { result2D, shape }, Output = { output } };
    }

    /// <summary>Drops outputs past <paramref name="count"/> that nothing reads; refuses the node if one is read.</summary>
    private static void KeepOutputs(NodeProto node, int count, UpgradeContext context, string reason)
    {
        for (int i = count; i < node.Output.Count; i++)
        {
            if (node.Output[i].Length > 0 && context.Names.IsRead(node.Output[i]))
            {
                throw Unsupported(node, context, FormattableString.Invariant($"has output {i} ('{node.Output[i]}') in use, and {reason}"));
            }
        }

        while (node.Output.Count > count)
        {
            node.Output.RemoveAt(node.Output.Count - 1);
        }
    }

    private static void SetInput(NodeProto node, int index, string name)
    {
        while (node.Input.Count <= index)
        {
            node.Input.Add(string.Empty);
        }

        node.Input[index] = name;
    }


    /// <summary>Removes an attribute and returns it, or <see langword="null"/> when the node has none of that name.</summary>
    private static AttributeProto? Take(NodeProto node, string name)
    {
        AttributeProto? attribute = node.FindAttribute(name);
        if (attribute is not null)
        {
            node.Attribute.Remove(attribute);
        }

        return attribute;
    }

    private static void Remove(NodeProto node, params string[] names)
    {
        foreach (string name in names)
        {
            _ = Take(node, name);
        }
    }

    /// <summary>The base for names derived from a node: its name, or its first output's.</summary>
    private static string Stem(NodeProto node) => node.Name.Length > 0 ? node.Name : node.Output.FirstOrDefault(o => o.Length > 0) ?? node.OpType;

    private static AttributeProto IntAttribute(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    private static AttributeProto StringAttribute(string name, string value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    private static NotSupportedException Unsupported(NodeProto node, UpgradeContext context, string problem) =>
        new(FormattableString.Invariant(
            $"Cannot upgrade node '{(node.Name.Length > 0 ? node.Name : "(unnamed)")}' ({node.OpType}) from default-domain opset {context.ModelOpset} to {context.TargetOpset}: it {problem}."));

    /// <summary>Where an adapter works: the graph (a subgraph has its parent), the versions, and the model's names.</summary>
    private sealed record UpgradeContext(GraphProto Graph, UpgradeContext? Parent, long ModelOpset, long TargetOpset, Names Names)
    {
        /// <summary>Adds a 1-D int64 initializer to the current graph and returns its (new, unique) name.</summary>
        public string AddInt64s(NodeProto node, string role, long[] values)
        {
            byte[] bytes = new byte[values.Length * sizeof(long)];
            for (int i = 0; i < values.Length; i++)
            {
                BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(i * sizeof(long)), values[i]);
            }

            return AddInitializer(node, role, TensorProto.Types.DataType.Int64, [values.Length], bytes);
        }

        /// <summary>Adds a 1-D float initializer to the current graph and returns its name.</summary>
        public string AddFloats(NodeProto node, string role, float[] values)
        {
            byte[] bytes = new byte[values.Length * sizeof(float)];
            for (int i = 0; i < values.Length; i++)
            {
                BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * sizeof(float)), values[i]);
            }

            return AddInitializer(node, role, TensorProto.Types.DataType.Float, [values.Length], bytes);
        }

        /// <summary>Adds a scalar initializer of <paramref name="like"/>'s element type (float, double or float16), as the old float attribute was.</summary>
        public string AddScalar(NodeProto node, string role, string like, float value)
        {
            TensorProto.Types.DataType type = ElementTypeOf(like) ?? throw Unsupported(node, this,
                $"needs its {role} as a tensor of the element type of '{like}', which the graph does not declare (add value_info for it)");
            byte[] bytes;
            switch (type)
            {
                case TensorProto.Types.DataType.Float:
                    bytes = new byte[sizeof(float)];
                    BinaryPrimitives.WriteSingleLittleEndian(bytes, value);
                    break;
                case TensorProto.Types.DataType.Double:
                    bytes = new byte[sizeof(double)];
                    BinaryPrimitives.WriteDoubleLittleEndian(bytes, value);
                    break;
                case TensorProto.Types.DataType.Float16:
                    bytes = new byte[2];
                    BinaryPrimitives.WriteHalfLittleEndian(bytes, (Half)value);
                    break;
                default:
                    throw Unsupported(node, this, $"works on '{like}' of element type {type}, for which the old float {role} attribute has no defined conversion");
            }

            return AddInitializer(node, role, type, [], bytes);
        }

        private string AddInitializer(NodeProto node, string role, TensorProto.Types.DataType type, long[] dims, byte[] bytes)
        {
            string name = Names.Fresh(Stem(node) + "_" + role);
            Graph.Initializer.Add(new TensorProto { Name = name, DataType = (int)type, Dims = { dims }, RawData = ByteString.CopyFrom(bytes) });
            return name;
        }

        /// <summary>The rank a value is declared with (graph input, output, value_info or initializer), here or in an enclosing graph.</summary>
        public int? RankOf(string name)
        {
            for (UpgradeContext? scope = this; scope is not null; scope = scope.Parent)
            {
                ValueInfoProto? info = Declared(scope.Graph, name);
                if (info?.Type?.TensorType?.Shape is TensorShapeProto shape)
                {
                    return shape.Dim.Count;
                }

                if (scope.Graph.Initializer.FirstOrDefault(t => t.Name == name) is TensorProto tensor)
                {
                    return tensor.Dims.Count;
                }
            }

            return null;
        }

        /// <summary>
        /// The element type of a value: declared, an initializer's, a Constant's or Cast's, or that of the first input of
        /// an operator that keeps it; <see langword="null"/> when none of these tells.
        /// </summary>
        public TensorProto.Types.DataType? ElementTypeOf(string name)
        {
            for (int hops = 0; hops < 1000; hops++)
            {
                NodeProto? producer = null;
                for (UpgradeContext? scope = this; scope is not null && producer is null; scope = scope.Parent)
                {
                    if (Declared(scope.Graph, name)?.Type?.TensorType is { ElemType: > 0 } tensorType)
                    {
                        return (TensorProto.Types.DataType)tensorType.ElemType;
                    }

                    if (scope.Graph.Initializer.FirstOrDefault(t => t.Name == name) is TensorProto initializer)
                    {
                        return (TensorProto.Types.DataType)initializer.DataType;
                    }

                    producer = scope.Graph.Node.FirstOrDefault(n => n.Output.Contains(name));
                }

                if (producer is null || producer.Domain is not ("" or "ai.onnx"))
                {
                    return null;
                }

                switch (producer.OpType)
                {
                    case "Cast":
                        return producer.FindAttribute("to") is AttributeProto to ? (TensorProto.Types.DataType)to.I : null;
                    case "Constant":
                        return producer.FindAttribute("value")?.T is TensorProto value ? (TensorProto.Types.DataType)value.DataType : null;
                    case string op when TypePreserving.Contains(op) && producer.Input.Count > 0:
                        name = producer.Input[0];
                        break;
                    default:
                        return null;
                }
            }

            return null;
        }

        private static ValueInfoProto? Declared(GraphProto graph, string name) =>
            graph.Input.FirstOrDefault(v => v.Name == name) ?? graph.ValueInfo.FirstOrDefault(v => v.Name == name) ?? graph.Output.FirstOrDefault(v => v.Name == name);
    }

    /// <summary>Every name used anywhere in the model, for new names that collide with none, and which values are read.</summary>
    private sealed class Names
    {
        private readonly HashSet<string> _used = new(StringComparer.Ordinal);
        private readonly HashSet<string> _read = new(StringComparer.Ordinal);

        public Names(GraphProto graph) => Collect(graph);

        /// <summary>Whether a node input or a graph output, anywhere in the model, names the value.</summary>
        public bool IsRead(string name) => _read.Contains(name);

        /// <summary>Returns <paramref name="wanted"/>, or it with the smallest numeric suffix that is still free, and reserves it.</summary>
        public string Fresh(string wanted)
        {
            string name = wanted;
            for (int i = 1; !_used.Add(name); i++)
            {
                name = FormattableString.Invariant($"{wanted}_{i}");
            }

            return name;
        }

        private void Collect(GraphProto graph)
        {
            _used.Add(graph.Name);
            foreach (ValueInfoProto value in graph.Input.Concat(graph.Output).Concat(graph.ValueInfo))
            {
                _used.Add(value.Name);
            }

            _read.UnionWith(graph.Output.Select(o => o.Name));
            _used.UnionWith(graph.Initializer.Select(t => t.Name));
            foreach (NodeProto node in graph.Node)
            {
                _used.Add(node.Name);
                _used.UnionWith(node.Input);
                _used.UnionWith(node.Output);
                _read.UnionWith(node.Input);
                foreach (AttributeProto attribute in node.Attribute)
                {
                    if (attribute.G is not null)
                    {
                        Collect(attribute.G);
                    }

                    foreach (GraphProto subgraph in attribute.Graphs)
                    {
                        Collect(subgraph);
                    }
                }
            }
        }
    }
}
