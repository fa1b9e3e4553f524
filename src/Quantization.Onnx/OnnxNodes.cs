using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>Small facts about nodes and graphs that several rewrites need.</summary>
internal static class OnnxNodes
{
    /// <summary>Gets a node's attribute by name, or <see langword="null"/>.</summary>
    public static AttributeProto? FindAttribute(this NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name);

    /// <summary>Whether the node is in the default (ai.onnx) domain.</summary>
    public static bool IsDefaultDomain(this NodeProto node) => node.Domain is "" or "ai.onnx";

    /// <summary>Whether a Gemm takes its B transposed ([N, K]).</summary>
    public static bool GemmTransB(this NodeProto node) => node.OpType == "Gemm" && node.FindAttribute("transB")?.I == 1;

    /// <summary>Whether an include pattern (if any) matches the node's name and no exclude pattern does.</summary>
    public static bool IsSelectedBy(this NodeProto node, IList<NamePattern> include, IList<NamePattern> exclude) =>
        (include.Count == 0 || include.Any(p => p.IsMatch(node.Name))) && !exclude.Any(p => p.IsMatch(node.Name));

    /// <summary>Every node of a graph and of the subgraphs its nodes' attributes hold, depth first.</summary>
    public static IEnumerable<NodeProto> AllNodes(this GraphProto graph)
    {
        foreach (NodeProto node in graph.Node)
        {
            yield return node;
            foreach (AttributeProto attribute in node.Attribute)
            {
                IEnumerable<GraphProto> subgraphs = attribute.G is null ? attribute.Graphs : attribute.Graphs.Prepend(attribute.G);
                foreach (NodeProto inner in subgraphs.SelectMany(AllNodes))
                {
                    yield return inner;
                }
            }
        }
    }

    /// <summary>Every value a graph (or a subgraph of it) reads: node inputs and graph outputs.</summary>
    public static HashSet<string> ReadValues(this GraphProto graph) =>
        new(graph.AllNodes().SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)), StringComparer.Ordinal);
}
