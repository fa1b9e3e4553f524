using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Where <see cref="OnnxStaticQuantizer"/> quantizes activations: the pairs of a node and one of its float inputs that
/// get a QuantizeLinear/DequantizeLinear pair, chosen by <see cref="OnnxStaticQuantizationOptions"/>.
/// </summary>
/// <remarks>
/// The rule, in order:
/// <list type="number">
/// <item>Nodes of <see cref="OnnxStaticQuantizationOptions.ActivationOpTypes"/> (default domain, selected by the activation
/// name patterns) have their activation inputs quantized: the data input of Conv, ConvTranspose and Gemm; the inputs of
/// a MatMul that are not constants, but a MatMul or Gemm whose two operands are both activations (attention scores and
/// context) only when <see cref="OnnxStaticQuantizationOptions.QuantizeActivationProducts"/> is set; every other
/// operator's non-constant inputs.</item>
/// <item>Nodes of <see cref="OnnxStaticQuantizationOptions.IntegerPathOpTypes"/> (Add and the pools by default) have
/// their non-constant inputs quantized only when they sit on an integer path: every such input comes from a node of the
/// first rule, from an input it quantizes, or from another such node, and their output reaches an input quantized by the
/// first rule, each through data-movement operators (Relu, Clip, Reshape, Flatten, Transpose, Squeeze, Unsqueeze,
/// Identity) and other such nodes. A residual Add of a convolutional network (Add, Relu, next Conv) is on one, so
/// ONNX Runtime can run the block as QLinearConv and QLinearAdd; the residual stream of a transformer (Add, then a
/// layer normalization) is not, and stays in float, where one range per tensor would cost most of the accuracy.</item>
/// </list>
/// </remarks>
internal static class ActivationSites
{
    /// <summary>Operators that move or clip values without mixing channels: an integer path runs through them.</summary>
    private static readonly HashSet<string> PassThrough = new(StringComparer.Ordinal) { "Relu", "Clip", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity" };

    /// <summary>The name a layer goes by: its node's name, or its first output's name when the node has none.</summary>
    public static string LayerName(NodeProto node) => node.Name.Length > 0 ? node.Name : node.Output[0];

    /// <summary>Finds the sites, in graph order.</summary>
    /// <param name="graph">The graph.</param>
    /// <param name="options">The rules.</param>
    /// <param name="isConstant">Whether a value is a constant (an initializer or a Constant node's output).</param>
    /// <returns>Each node with the inputs to quantize, nodes in graph order, each with at least one input.</returns>
    public static IReadOnlyList<(NodeProto Node, IReadOnlyList<string> Inputs)> Find(GraphProto graph, OnnxStaticQuantizationOptions options, Func<string, bool> isConstant)
    {
        Dictionary<NodeProto, IReadOnlyList<string>> sites = [];
        HashSet<string> quantized = new(StringComparer.Ordinal);
        foreach (NodeProto node in graph.Node.Where(n => n.IsDefaultDomain() && options.ActivationOpTypes.Contains(n.OpType) && options.SelectsActivationsOf(n)))
        {
            string[] inputs = [.. PrimaryInputs(node, options, isConstant)];
            if (inputs.Length > 0)
            {
                sites[node] = inputs;
                quantized.UnionWith(inputs);
            }
        }

        ILookup<string, NodeProto> consumers = graph.Node.SelectMany(n => n.Input.Where(i => i.Length > 0).Distinct().Select(i => (Input: i, Node: n))).ToLookup(p => p.Input, p => p.Node, StringComparer.Ordinal);
        Dictionary<string, NodeProto> producers = graph.Node.SelectMany(n => n.Output.Where(o => o.Length > 0).Select(o => (Output: o, Node: n))).ToDictionary(p => p.Output, p => p.Node, StringComparer.Ordinal);
        HashSet<NodeProto> primary = [.. sites.Keys];
        Dictionary<string, bool> reaches = new(StringComparer.Ordinal), integer = new(StringComparer.Ordinal);
        bool IsPathNode(NodeProto n) => n.IsDefaultDomain() && !primary.Contains(n) && options.IntegerPathOpTypes.Contains(n.OpType) && options.SelectsActivationsOf(n);
        bool Reaches(string value) => quantized.Contains(value) || Memoised(reaches, value, () => consumers[value]
            .Where(c => IsPathNode(c) || (c.IsDefaultDomain() && PassThrough.Contains(c.OpType)))
            .Any(c => c.Output.Any(Reaches)));
        bool FromInteger(string value) => quantized.Contains(value) || Memoised(integer, value, () => producers.TryGetValue(value, out NodeProto? p) && (
            primary.Contains(p)
            || (p.IsDefaultDomain() && PassThrough.Contains(p.OpType) && p.Input.Count > 0 && FromInteger(p.Input[0]))
            || (IsPathNode(p) && Inputs(p).All(FromInteger))));
        string[] Inputs(NodeProto n) => [.. n.Input.Where(i => i.Length > 0 && !isConstant(i)).Distinct()];

        foreach (NodeProto node in graph.Node.Where(IsPathNode))
        {
            string[] inputs = Inputs(node);
            if (inputs.Length > 0 && inputs.All(FromInteger) && node.Output.Any(Reaches))
            {
                sites[node] = inputs;
            }
        }

        return [.. graph.Node.Where(sites.ContainsKey).Select(n => (n, sites[n]))];
    }

    /// <summary>The activation inputs of a node of the first rule.</summary>
    private static IEnumerable<string> PrimaryInputs(NodeProto node, OnnxStaticQuantizationOptions options, Func<string, bool> isConstant)
    {
        bool Activation(int i) => node.Input.Count > i && node.Input[i].Length > 0 && !isConstant(node.Input[i]);
        return node.OpType switch
        {
            "Conv" or "ConvTranspose" => Activation(0) ? [node.Input[0]] : [],
            "Gemm" or "MatMul" when Activation(0) && Activation(1) => options.QuantizeActivationProducts ? node.Input.Take(2).Distinct() : [],
            "Gemm" or "MatMul" => node.Input.Take(2).Where((_, i) => Activation(i)),
            _ => node.Input.Where((_, i) => Activation(i)).Distinct(),
        };
    }

    /// <summary>A memoised predicate over an acyclic graph (a value under evaluation counts as false, so a malformed cycle ends).</summary>
    private static bool Memoised(Dictionary<string, bool> memo, string value, Func<bool> compute)
    {
        if (memo.TryGetValue(value, out bool known))
        {
            return known;
        }

        memo[value] = false;
        return memo[value] = compute();
    }
}
