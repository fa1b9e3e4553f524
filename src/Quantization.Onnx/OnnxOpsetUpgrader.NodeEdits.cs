using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

public static partial class OnnxOpsetUpgrader
{
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
}
