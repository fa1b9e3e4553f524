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
public static partial class OnnxOpsetUpgrader
{
    /// <summary>The oldest default-domain opset a model may import to be upgraded.</summary>
    public const long OldestSupportedOpset = 7;

    /// <summary>The lowest target opset (the first with per-axis DequantizeLinear).</summary>
    public const long MinimumTargetOpset = 13;

    /// <summary>The highest target opset the operator tables have been checked against.</summary>
    public const long MaximumTargetOpset = 21;

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
}
