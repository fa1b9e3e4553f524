using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

public static partial class OnnxOpsetUpgrader
{
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
}
