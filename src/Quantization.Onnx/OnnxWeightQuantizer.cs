using System.Runtime.InteropServices;

using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>Rules for <see cref="OnnxWeightQuantizer"/>.</summary>
public sealed class OnnxWeightQuantizationOptions
{
    /// <summary>Gets the operator types whose weights are quantized: Conv, ConvTranspose, MatMul and Gemm by default.</summary>
    public ISet<string> OpTypes { get; } = new HashSet<string>(StringComparer.Ordinal) { "Conv", "ConvTranspose", "MatMul", "Gemm" };

    /// <summary>Gets node-name patterns whose weights stay in float; they win over everything else.</summary>
    public IList<NamePattern> ExcludeNodes { get; } = [];

    /// <summary>Gets or sets the numeric convention of the weight parameters; <see cref="NumericConvention.Onnx"/> by default.</summary>
    public NumericConvention Convention { get; set; } = NumericConvention.Onnx;
}

/// <summary>What <see cref="OnnxWeightQuantizer"/> did to one weight.</summary>
/// <param name="Node">The (first) node that consumes the weight.</param>
/// <param name="OpType">That node's operator type.</param>
/// <param name="Weight">The weight's name (an initializer or a Constant node's output).</param>
/// <param name="Axis">The output-channel axis the weight was quantized along.</param>
/// <param name="Report">The weight's quantization error and sizes.</param>
public sealed record OnnxWeightReport(string Node, string OpType, string Weight, int Axis, TensorErrorReport Report);

/// <summary>
/// Weight-only quantization (W8A16) of an ONNX model: the float weights (initializers or Constant nodes) of Conv,
/// ConvTranspose, MatMul and Gemm become symmetric int8 per output channel, followed by a DequantizeLinear with the
/// channel axis of their operator (Conv 0, ConvTranspose 1, MatMul the last axis of B, Gemm by transB), so ONNX Runtime
/// runs the model unchanged otherwise.
/// </summary>
public static class OnnxWeightQuantizer
{
    /// <summary>Quantizes the model's weights in place.</summary>
    /// <param name="model">The model; it must import opset 13 or later (per-axis DequantizeLinear).</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <returns>A report per quantized weight, in graph order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is <see langword="null"/>.</exception>
    /// <exception cref="NotSupportedException">The model imports an opset older than 13; <see cref="OnnxOpsetUpgrader.Upgrade"/> raises it.</exception>
    /// <exception cref="InvalidDataException">A weight's stored data does not match its shape.</exception>
    public static IReadOnlyList<OnnxWeightReport> Quantize(OnnxModel model, OnnxWeightQuantizationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new OnnxWeightQuantizationOptions();
        if (model.Opset < 13)
        {
            throw new NotSupportedException(FormattableString.Invariant(
                $"The model imports opset {model.Opset}; per-channel DequantizeLinear needs opset 13 or later. Upgrade it first with {nameof(OnnxOpsetUpgrader)}.{nameof(OnnxOpsetUpgrader.Upgrade)}(model)."));
        }

        GraphProto graph = model.Proto.Graph;
        Dictionary<string, TensorProto> initializers = graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Float).ToDictionary(t => t.Name, StringComparer.Ordinal);

        // Weights may also be the value of a Constant node; such a node is replaced like an initializer.
        Dictionary<string, NodeProto> constants = graph.Node
            .Where(n => n.OpType == "Constant" && n.Domain is "" or "ai.onnx" && n.Output.Count == 1 && n.Attribute.Any(a => a.Name == "value" && a.T?.DataType == (int)TensorProto.Types.DataType.Float))
            .ToDictionary(n => n.Output[0], StringComparer.Ordinal);
        List<OnnxWeightReport> reports = [];
        List<NodeProto> replacedConstants = [];
        List<NodeProto> dequantizers = [];
        foreach (NodeProto node in graph.Node)
        {
            if (!options.OpTypes.Contains(node.OpType) || node.Input.Count < 2 || options.ExcludeNodes.Any(p => p.IsMatch(node.Name)))
            {
                continue;
            }

            // A float initializer or Constant of rank 2 or more, not yet quantized for another node; vectors stay in float.
            string weightName = node.Input[1];
            TensorProto weight;
            if (initializers.TryGetValue(weightName, out TensorProto? initializer) && initializer.Dims.Count >= 2)
            {
                weight = initializer;
                initializers.Remove(weightName);
                graph.Initializer.Remove(initializer);
            }
            else if (constants.TryGetValue(weightName, out NodeProto? constant) && constant.Attribute.First(a => a.Name == "value").T.Dims.Count >= 2)
            {
                weight = constant.Attribute.First(a => a.Name == "value").T.Clone();
                weight.Name = weightName;
                constants.Remove(weightName);
                replacedConstants.Add(constant);
            }
            else
            {
                continue;
            }

            int axis = ChannelAxis(node, weight.Dims.Count);
            int[] shape = [.. weight.Dims.Select(d => checked((int)d))];
            float[] values = model.ReadFloats(weight);
            QuantizationScheme scheme = new(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerChannel(axis), options.Convention);
            QuantizedTensor quantized = QuantizedTensor.Quantize(values, shape, scheme, weightName);
            Replace(graph, weight, quantized, axis, dequantizers);
            reports.Add(new OnnxWeightReport(node.Name, node.OpType, weightName, axis, TensorErrorReport.Compare(values, quantized)));
        }

        foreach (NodeProto constant in replacedConstants)
        {
            graph.Node.Remove(constant);
        }

        // The DequantizeLinear nodes read only initializers, so they can lead the (topologically sorted) node list.
        for (int i = dequantizers.Count - 1; i >= 0; i--)
        {
            graph.Node.Insert(0, dequantizers[i]);
        }

        return reports;
    }

    /// <summary>The output-channel axis of a weight for its operator.</summary>
    private static int ChannelAxis(NodeProto node, int rank) => node.OpType switch
    {
        "ConvTranspose" => 1,
        "MatMul" => rank - 1,
        "Gemm" => node.Attribute.FirstOrDefault(a => a.Name == "transB")?.I == 1 ? 0 : 1,
        _ => 0,
    };

    /// <summary>Adds the weight's int8 data, scales and zero points as initializers, and queues the DequantizeLinear that restores its name.</summary>
    private static void Replace(GraphProto graph, TensorProto weight, QuantizedTensor quantized, int axis, List<NodeProto> dequantizers)
    {
        string name = weight.Name;
        ValueInfoProto? input = graph.Input.FirstOrDefault(i => i.Name == name);
        if (input is not null)
        {
            graph.Input.Remove(input); // old IR versions list initializers as graph inputs too
        }

        long channels = weight.Dims[axis];
        graph.Initializer.Add(new TensorProto { Name = name + "_quantized", DataType = (int)TensorProto.Types.DataType.Int8, Dims = { weight.Dims }, RawData = ByteString.CopyFrom(quantized.Data) });
        graph.Initializer.Add(new TensorProto { Name = name + "_scale", DataType = (int)TensorProto.Types.DataType.Float, Dims = { channels }, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(quantized.Parameters.Scales)) });
        graph.Initializer.Add(new TensorProto { Name = name + "_zero_point", DataType = (int)TensorProto.Types.DataType.Int8, Dims = { channels }, RawData = ByteString.CopyFrom(quantized.Parameters.ZeroPoints.ToArray().Select(z => (byte)z).ToArray()) });
        dequantizers.Add(new NodeProto
        {
            Name = name + "_DequantizeLinear",
            OpType = "DequantizeLinear",
            Input = { name + "_quantized", name + "_scale", name + "_zero_point" },
            Output = { name },
            Attribute = { new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = axis } },
        });
    }
}
