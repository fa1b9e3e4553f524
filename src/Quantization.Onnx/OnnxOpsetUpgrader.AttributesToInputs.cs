using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

public static partial class OnnxOpsetUpgrader
{
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
}
