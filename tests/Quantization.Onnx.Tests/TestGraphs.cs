using System.Runtime.InteropServices;

using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx.Tests;

/// <summary>Builders for the small ONNX graphs the tests make, and the measures they compare outputs with.</summary>
internal static class TestGraphs
{
    public static ModelProto Model(string name, IEnumerable<NodeProto> nodes, IEnumerable<TensorProto> initializers, IEnumerable<ValueInfoProto> inputs, IEnumerable<ValueInfoProto> outputs, long opset = 13) => new()
    {
        IrVersion = 8,
        OpsetImport = { new OperatorSetIdProto { Version = opset } },
        Graph = new GraphProto { Name = name, Node = { nodes }, Initializer = { initializers }, Input = { inputs }, Output = { outputs } },
    };

    public static NodeProto Node(string opType, string name, string[] inputs, string[] outputs, params AttributeProto[] attributes) =>
        new() { Name = name, OpType = opType, Input = { inputs }, Output = { outputs }, Attribute = { attributes } };

    public static AttributeProto Ints(string name, params long[] values) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { values } };

    public static AttributeProto Int(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static TensorProto Tensor(string name, float[] values, params long[] dims) => new()
    {
        Name = name,
        DataType = (int)TensorProto.Types.DataType.Float,
        Dims = { dims },
        RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan())),
    };

    public static ValueInfoProto Value(string name, params long[] dims)
    {
        TensorShapeProto shape = new();
        shape.Dim.AddRange(dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } } };
    }

    /// <summary>Uniform values in [-scale/2, scale/2), the same for the same seed.</summary>
    public static float[] Random(int count, int seed, float scale = 1)
    {
        Random random = new(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() - 0.5) * scale)];
    }

    public static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            na += (double)a[i] * a[i];
            nb += (double)b[i] * b[i];
        }

        return dot / Math.Sqrt(na * nb);
    }

    /// <summary>Runs a model on one float input and returns its first output.</summary>
    public static float[] RunSingle(byte[] model, string input, float[] values, long[] shape, GraphOptimizationLevel level = GraphOptimizationLevel.ORT_ENABLE_BASIC)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = level };
        using InferenceSession session = new(model, options);
        using OrtValue value = OrtValue.CreateTensorValueFromMemory(values, shape);
        using RunOptions runOptions = new();
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(runOptions, [input], [value], [session.OutputNames[0]]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    /// <summary>One feed of one float input, as the calibrators take them.</summary>
    public static IReadOnlyCollection<NamedOnnxValue> Feed(string input, float[] values, params int[] shape) =>
        [NamedOnnxValue.CreateFromTensor(input, new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>(values, shape))];
}
