using System.Runtime.InteropServices;

using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// The graph edits the quantizers share: taking float weights out of initializers or Constant nodes, adding quantized
/// tensors with their DequantizeLinear, and inserting QuantizeLinear/DequantizeLinear pairs on activations, with names
/// that never collide with the graph's. The edits go to a copy of the graph, queued and applied by <see cref="Commit"/>
/// in an order that keeps the node list sorted; only then does the copy replace the model's graph, so a quantizer that
/// fails half-way leaves the model as it was.
/// </summary>
internal sealed class OnnxGraphEditor
{
    /// <summary>ONNX's INT4 element type (opset 21), which the generated enum predates.</summary>
    internal const TensorProto.Types.DataType Int4DataType = (TensorProto.Types.DataType)22;

    /// <summary>ONNX's UINT4 element type (opset 21).</summary>
    internal const TensorProto.Types.DataType UInt4DataType = (TensorProto.Types.DataType)21;

    private readonly OnnxModel _model;
    private readonly GraphProto _graph;
    private readonly Dictionary<string, TensorProto> _initializers;
    private readonly Dictionary<string, NodeProto> _constants;
    private readonly HashSet<string> _names;
    private readonly List<NodeProto> _removedConstants = [];
    private readonly List<NodeProto> _leadingNodes = [];
    private readonly List<(NodeProto Before, NodeProto[] Nodes)> _insertions = [];
    private readonly List<(NodeProto After, NodeProto Node)> _appendices = [];
    private readonly HashSet<string> _replaced = new(StringComparer.Ordinal);
    private readonly List<NodeProto> _removedNodes = [];
    private readonly bool _readOnly;

    /// <summary>Initializes a new instance of the <see cref="OnnxGraphEditor"/> class.</summary>
    /// <param name="model">The model.</param>
    /// <param name="readOnly">Only queries, no copy of the graph and no <see cref="Commit"/>.</param>
    public OnnxGraphEditor(OnnxModel model, bool readOnly = false)
    {
        _model = model;
        _readOnly = readOnly;
        _graph = readOnly ? model.Proto.Graph : model.Proto.Graph.Clone();
        _initializers = _graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Float).ToDictionary(t => t.Name, StringComparer.Ordinal);
        _constants = _graph.Node
            .Where(n => n.OpType == "Constant" && n.Domain is "" or "ai.onnx" && n.Output.Count == 1 && n.Attribute.Any(a => a.Name == "value" && a.T?.DataType == (int)TensorProto.Types.DataType.Float))
            .ToDictionary(n => n.Output[0], StringComparer.Ordinal);
        // Subgraphs see the outer scope, so a new name must not shadow one of theirs either.
        _names = new HashSet<string>(_graph.Initializer.Select(t => t.Name).Concat(_graph.Input.Select(i => i.Name)).Concat(_graph.AllNodes().SelectMany(n => n.Output.Concat(n.Input).Append(n.Name))), StringComparer.Ordinal);
    }

    public GraphProto Graph => _graph;

    /// <summary>Whether a value is a float constant (initializer or Constant node) not yet taken.</summary>
    public bool IsFloatConstant(string name) => _initializers.ContainsKey(name) || _constants.ContainsKey(name);

    /// <summary>Gets the shape of a float constant not yet taken, or <see langword="null"/>.</summary>
    public IReadOnlyList<long>? ConstantShape(string name) =>
        _initializers.TryGetValue(name, out TensorProto? initializer) ? initializer.Dims
        : _constants.TryGetValue(name, out NodeProto? constant) ? ValueOf(constant).Dims
        : null;

    /// <summary>Takes a float constant out of the graph and returns its values and shape.</summary>
    public (float[] Values, int[] Shape) Take(string name)
    {
        TensorProto tensor;
        if (_initializers.TryGetValue(name, out TensorProto? initializer))
        {
            tensor = initializer;
            RemoveInitializer(name);
        }
        else if (_constants.Remove(name, out NodeProto? constant))
        {
            tensor = ValueOf(constant).Clone();
            tensor.Name = name;
            _removedConstants.Add(constant);
        }
        else
        {
            throw new InvalidOperationException($"'{name}' is not a float constant of the graph.");
        }

        return (_model.ReadFloats(tensor), [.. tensor.Dims.Select(d => checked((int)d))]);
    }

    /// <summary>Reads a float constant (initializer or Constant node) without taking it out of the graph.</summary>
    public float[] ReadConstant(string name) =>
        _initializers.TryGetValue(name, out TensorProto? initializer) ? _model.ReadFloats(initializer)
        : _constants.TryGetValue(name, out NodeProto? constant) ? _model.ReadFloats(ValueOf(constant))
        : throw new InvalidOperationException($"'{name}' is not a float constant of the graph.");

    /// <summary>Points one input of a node at another value; the old value's initializer goes at <see cref="Commit"/> if nothing reads it any more.</summary>
    public void Rewire(NodeProto node, int input, string value)
    {
        _replaced.Add(node.Input[input]);
        node.Input[input] = value;
    }

    /// <summary>Queues a node's removal; its inputs' initializers go at <see cref="Commit"/> if nothing reads them any more.</summary>
    public void RemoveNode(NodeProto node)
    {
        _removedNodes.Add(node);
        _replaced.UnionWith(node.Input);
    }

    /// <summary>Queues nodes to go, in this order, right before another (one call per anchor).</summary>
    public void InsertBefore(NodeProto anchor, params NodeProto[] nodes) => _insertions.Add((anchor, nodes));

    /// <summary>Queues a node to go right after another.</summary>
    public void InsertAfter(NodeProto anchor, NodeProto node) => _appendices.Add((anchor, node));

    /// <summary>Makes a name from a base that no value, initializer or node of the graph has yet.</summary>
    public string UniqueName(string baseName)
    {
        string name = baseName;
        for (int i = 1; !_names.Add(name); i++)
        {
            name = FormattableString.Invariant($"{baseName}_{i}");
        }

        return name;
    }

    /// <summary>Adds an initializer of raw little-endian data and returns its (unique) name.</summary>
    public string AddInitializer(string baseName, TensorProto.Types.DataType type, IEnumerable<long> dims, ReadOnlySpan<byte> data)
    {
        string name = UniqueName(baseName);
        _graph.Initializer.Add(new TensorProto { Name = name, DataType = (int)type, Dims = { dims }, RawData = ByteString.CopyFrom(data) });
        return name;
    }

    /// <summary>
    /// Stores a quantized constant under <paramref name="name"/> again: its integer data, scales and zero points become
    /// initializers, and a DequantizeLinear (queued at the head of the graph) restores the name.
    /// </summary>
    /// <remarks>
    /// Per tensor when <paramref name="axis"/> is <see langword="null"/>, per channel along it when <paramref name="blockSize"/>
    /// is 0, else blocked (opset 21): <paramref name="parameterDims"/> then has the data's rank.
    /// </remarks>
    public void AddDequantized(string name, TensorProto.Types.DataType type, IEnumerable<long> dims, ReadOnlySpan<byte> data, ReadOnlySpan<float> scales, ReadOnlySpan<byte> zeroPoints, int? axis, long[]? parameterDims = null, int blockSize = 0)
    {
        parameterDims ??= axis is null ? [] : [scales.Length];
        string quantized = AddInitializer(name + "_quantized", type, dims, data);
        string scale = AddInitializer(name + "_scale", TensorProto.Types.DataType.Float, parameterDims, MemoryMarshal.AsBytes(scales));
        string zeroPoint = AddInitializer(name + "_zero_point", type, parameterDims, zeroPoints);
        NodeProto node = new() { Name = UniqueName(name + "_DequantizeLinear"), OpType = "DequantizeLinear", Input = { quantized, scale, zeroPoint }, Output = { name } };
        if (axis is int a)
        {
            node.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = a });
        }

        if (blockSize > 0)
        {
            node.Attribute.Add(new AttributeProto { Name = "block_size", Type = AttributeProto.Types.AttributeType.Int, I = blockSize });
        }

        _leadingNodes.Add(node);
    }

    /// <summary>
    /// Stores a quantized weight under its name again: per tensor, per channel along the scheme's axis, or (opset 21) in
    /// blocks along it; 4-bit codes and zero points as ONNX int4 / uint4, packed as the tensor stores them.
    /// </summary>
    public void AddDequantized(string name, QuantizedTensor quantized)
    {
        QuantizationGranularity granularity = quantized.Scheme.Granularity;
        int rank = quantized.Shape.Length;
        int? axis = granularity.Kind is GranularityKind.PerChannel or GranularityKind.PerGroup ? (granularity.Axis + rank) % rank : null;
        long[] parameterDims = granularity.Kind switch
        {
            GranularityKind.PerTensor => [],
            GranularityKind.PerChannel => [quantized.Shape[axis!.Value]],
            GranularityKind.PerGroup => [.. granularity.GetParameterShape(quantized.Shape).Select(d => (long)d)],
            _ => throw new NotSupportedException($"'{name}': DequantizeLinear takes per-tensor, per-axis or blocked parameters, not {granularity}."),
        };
        byte[] zeroPoints = [.. quantized.Parameters.ZeroPoints.ToArray().Select(z => (byte)z)];
        TensorProto.Types.DataType type = quantized.Scheme.Type switch
        {
            QuantizedType.UInt8 => TensorProto.Types.DataType.Uint8,
            QuantizedType.Int4 => Int4DataType,
            QuantizedType.UInt4 => UInt4DataType,
            _ => TensorProto.Types.DataType.Int8,
        };
        if (quantized.Scheme.Type.GetBitWidth() == 4)
        {
            byte[] packed = new byte[(zeroPoints.Length + 1) / 2];
            if (quantized.Scheme.Type.IsSigned())
            {
                QuantizationPrimitives.PackInt4(MemoryMarshal.Cast<byte, sbyte>(zeroPoints), packed);
            }
            else
            {
                QuantizationPrimitives.PackUInt4(zeroPoints, packed);
            }

            zeroPoints = packed;
        }

        int blockSize = granularity.Kind == GranularityKind.PerGroup ? granularity.GroupSize : 0;
        AddDequantized(name, type, [.. quantized.Shape.ToArray().Select(d => (long)d)], quantized.Data, quantized.Parameters.Scales, zeroPoints, axis, parameterDims, blockSize);
    }

    /// <summary>
    /// Inserts QuantizeLinear then DequantizeLinear (per tensor) on an activation, before the first of its consumers,
    /// and makes <paramref name="consumers"/> read the dequantized value.
    /// </summary>
    public void AddQuantizeDequantize(string name, ScaleAndZeroPoint parameters, QuantizedType type, IReadOnlyCollection<NodeProto> consumers)
    {
        TensorProto.Types.DataType dataType = type == QuantizedType.UInt8 ? TensorProto.Types.DataType.Uint8 : TensorProto.Types.DataType.Int8;
        float scale = parameters.Scale;
        string scaleName = AddInitializer(name + "_scale", TensorProto.Types.DataType.Float, [], MemoryMarshal.AsBytes(new ReadOnlySpan<float>(in scale)));
        string zeroPointName = AddInitializer(name + "_zero_point", dataType, [], [(byte)parameters.ZeroPoint]);
        string quantized = UniqueName(name + "_quantized");
        string dequantized = UniqueName(name + "_dequantized");
        NodeProto quantize = new() { Name = UniqueName(name + "_QuantizeLinear"), OpType = "QuantizeLinear", Input = { name, scaleName, zeroPointName }, Output = { quantized } };
        NodeProto dequantize = new() { Name = UniqueName(name + "_DequantizeLinear"), OpType = "DequantizeLinear", Input = { quantized, scaleName, zeroPointName }, Output = { dequantized } };
        foreach (NodeProto consumer in consumers)
        {
            for (int i = 0; i < consumer.Input.Count; i++)
            {
                if (consumer.Input[i] == name)
                {
                    consumer.Input[i] = dequantized;
                }
            }
        }

        NodeProto first = _graph.Node.First(consumers.Contains);
        _insertions.Add((first, [quantize, dequantize]));
    }

    /// <summary>Applies the queued edits: removes taken Constant nodes and inserts the new nodes where they belong.</summary>
    public void Commit()
    {
        if (_readOnly)
        {
            throw new InvalidOperationException("A read-only editor has nothing to commit.");
        }

        foreach (NodeProto node in _removedNodes)
        {
            _graph.Node.Remove(node);
        }

        foreach ((NodeProto anchor, NodeProto node) in _appendices)
        {
            _graph.Node.Insert(_graph.Node.IndexOf(anchor) + 1, node);
        }

        HashSet<string> read = _graph.ReadValues();
        foreach (string name in _replaced.Where(n => !read.Contains(n)))
        {
            if (_initializers.ContainsKey(name))
            {
                RemoveInitializer(name);
            }
            else if (_constants.Remove(name, out NodeProto? constant))
            {
                _removedConstants.Add(constant);
            }
        }

        foreach (NodeProto constant in _removedConstants)
        {
            _graph.Node.Remove(constant);
        }

        foreach ((NodeProto before, NodeProto[] nodes) in _insertions)
        {
            int index = _graph.Node.IndexOf(before);
            for (int i = nodes.Length - 1; i >= 0; i--)
            {
                _graph.Node.Insert(index, nodes[i]);
            }
        }

        // The DequantizeLinear nodes of constants read only initializers, so they can lead the sorted node list.
        for (int i = _leadingNodes.Count - 1; i >= 0; i--)
        {
            _graph.Node.Insert(0, _leadingNodes[i]);
        }

        _model.Proto.Graph = _graph;
        _removedConstants.Clear();
        _removedNodes.Clear();
        _insertions.Clear();
        _appendices.Clear();
        _replaced.Clear();
        _leadingNodes.Clear();
    }

    /// <summary>Removes a float initializer, and its entry among the graph inputs where old IR versions list initializers too.</summary>
    private void RemoveInitializer(string name)
    {
        _initializers.Remove(name, out TensorProto? initializer);
        _graph.Initializer.Remove(initializer!);
        ValueInfoProto? input = _graph.Input.FirstOrDefault(i => i.Name == name);
        if (input is not null)
        {
            _graph.Input.Remove(input);
        }
    }

    private static TensorProto ValueOf(NodeProto constant) => constant.Attribute.First(a => a.Name == "value").T;
}
