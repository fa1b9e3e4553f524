using Google.Protobuf;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx.Tests;

public sealed class OnnxModelTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("onnx-model-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void Floats_AreReadFromRawDataFloatDataAndExternalData()
    {
        float[] values = [1.5f, -2f, 3.25f, 0f, 7f, -0.5f];
        File.WriteAllBytes(Path.Combine(_directory, "weights.bin"), [0, 0, 0, 0, .. Bytes(values)]);
        ModelProto proto = Model(
            Tensor("raw", raw: Bytes(values)),
            Tensor("typed", typed: values),
            Tensor("external", external: [("location", "weights.bin"), ("offset", "4"), ("length", "24")]));
        string path = Path.Combine(_directory, "model.onnx");
        File.WriteAllBytes(path, proto.ToByteArray());

        OnnxModel model = OnnxModel.Load(path);
        Assert.Equal(13, model.Opset);
        foreach (string name in new[] { "raw", "typed", "external" })
        {
            Assert.Equal(values, model.ReadFloats(model.GetInitializer(name)));
        }
    }

    [Fact]
    public void Save_RoundTripsAndLeavesNoTemporaryFile()
    {
        OnnxModel model = OnnxModel.Parse(Model(Tensor("w", raw: Bytes([1f, 2f, 3f, 4f, 5f, 6f]))).ToByteArray());
        string path = Path.Combine(_directory, "out.onnx");
        model.Save(path);
        model.Save(path);
        Assert.Equal(model.Proto, OnnxModel.Load(path).Proto);
        Assert.Equal(["out.onnx"], Directory.GetFiles(_directory).Select(Path.GetFileName));

        // A failed write (the target is a directory) leaves nothing behind.
        string blocked = Path.Combine(_directory, "blocked.onnx");
        Directory.CreateDirectory(blocked);
        Assert.ThrowsAny<IOException>(() => model.Save(blocked));
        Assert.Equal(["out.onnx"], Directory.GetFiles(_directory).Select(Path.GetFileName));
    }

    [Fact]
    public void HostileFiles_GetClearExceptions()
    {
        byte[] good = Model(Tensor("w", raw: Bytes([1f, 2f, 3f, 4f, 5f, 6f]))).ToByteArray();
        string path = Path.Combine(_directory, "truncated.onnx");
        File.WriteAllBytes(path, good[..^7]);
        InvalidDataException truncated = Assert.Throws<InvalidDataException>(() => OnnxModel.Load(path));
        Assert.Contains("truncated.onnx", truncated.Message, StringComparison.Ordinal);

        Assert.Throws<InvalidDataException>(() => OnnxModel.Parse(new ModelProto { IrVersion = 8 }.ToByteArray()));

        OnnxModel model = OnnxModel.Parse(Model(
            Tensor("short", raw: Bytes([1f, 2f])),
            Tensor("escape", external: [("location", "../secret.bin")]),
            Tensor("beyond", external: [("location", "small.bin"), ("offset", "8")]),
            Tensor("negative", external: [("location", "small.bin"), ("offset", "-1")])).ToByteArray(), _directory);
        File.WriteAllBytes(Path.Combine(_directory, "small.bin"), new byte[24]);
        Assert.Contains("'short' needs 24 bytes", Assert.Throws<InvalidDataException>(() => model.ReadFloats(model.GetInitializer("short"))).Message, StringComparison.Ordinal);
        Assert.Contains("outside the model's directory", Assert.Throws<InvalidDataException>(() => model.ReadFloats(model.GetInitializer("escape"))).Message, StringComparison.Ordinal);
        Assert.Contains("'beyond' claims 24 bytes at offset 8", Assert.Throws<InvalidDataException>(() => model.ReadFloats(model.GetInitializer("beyond"))).Message, StringComparison.Ordinal);
        Assert.Throws<InvalidDataException>(() => model.ReadFloats(model.GetInitializer("negative")));
        Assert.Throws<KeyNotFoundException>(() => model.GetInitializer("missing"));
        Assert.Throws<InvalidDataException>(() => model.ReadFloats(new TensorProto { Name = "int", DataType = (int)TensorProto.Types.DataType.Int8 }));
    }

    [Fact]
    public void ExternalLocationWithNul_IsRefusedAsInvalidData()
    {
        // Found by fuzzing (fuzz/crashes/onnx): a NUL in an external-data location escaped as the ArgumentException of Path.GetFullPath.
        OnnxModel model = OnnxModel.Parse(Model(Tensor("nul", external: [("location", "weights\0.bin")])).ToByteArray(), _directory);

        InvalidDataException e = Assert.Throws<InvalidDataException>(() => model.ReadFloats(model.GetInitializer("nul")));
        Assert.Contains("'nul' is stored in 'weights\\0.bin', which holds a character no path may hold", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MalformedGraphs_AreRejectedWithTheNodesNamed()
    {
        ModelProto cycle = Model();
        cycle.Graph.Node.Add(new NodeProto { Name = "first", OpType = "Relu", Input = { "b" }, Output = { "a" } });
        cycle.Graph.Node.Add(new NodeProto { Name = "second", OpType = "Relu", Input = { "a" }, Output = { "b" } });
        InvalidDataException loop = Assert.Throws<InvalidDataException>(() => OnnxModel.Parse(cycle.ToByteArray()));
        Assert.Contains("cycle", loop.Message, StringComparison.Ordinal);
        Assert.Contains("'first'", loop.Message, StringComparison.Ordinal);

        ModelProto dangling = Model();
        dangling.Graph.Node.Add(new NodeProto { Name = "lost", OpType = "Relu", Input = { "nowhere" }, Output = { "y" } });
        Assert.Contains("'nowhere' of node 'lost'", Assert.Throws<InvalidDataException>(() => OnnxModel.Parse(dangling.ToByteArray())).Message, StringComparison.Ordinal);

        ModelProto twice = Model(Tensor("w", raw: Bytes([1f, 2f, 3f, 4f, 5f, 6f])));
        twice.Graph.Node.Add(new NodeProto { Name = "one", OpType = "Relu", Input = { "w" }, Output = { "y" } });
        twice.Graph.Node.Add(new NodeProto { Name = "two", OpType = "Relu", Input = { "w" }, Output = { "y" } });
        Assert.Contains("produced by two nodes", Assert.Throws<InvalidDataException>(() => OnnxModel.Parse(twice.ToByteArray())).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void UnknownOperators_AreReportedByOnnxRuntimeWithTheirName()
    {
        ModelProto unknown = Model(Tensor("w", raw: Bytes([1f, 2f, 3f, 4f, 5f, 6f])));
        unknown.Graph.Node.Add(new NodeProto { Name = "mystery", OpType = "NoSuchOperator", Input = { "w" }, Output = { "y" } });
        unknown.Graph.Output.Add(new ValueInfoProto { Name = "y", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } });
        OnnxModel model = OnnxModel.Parse(unknown.ToByteArray());
        Microsoft.ML.OnnxRuntime.OnnxRuntimeException error = Assert.Throws<Microsoft.ML.OnnxRuntime.OnnxRuntimeException>(() => new Microsoft.ML.OnnxRuntime.InferenceSession(model.Proto.ToByteArray()));
        Assert.Contains("NoSuchOperator", error.Message, StringComparison.Ordinal);
    }

    private static ModelProto Model(params TensorProto[] initializers) => new()
    {
        IrVersion = 8,
        Graph = new GraphProto { Name = "g", Initializer = { initializers } },
        OpsetImport = { new OperatorSetIdProto { Version = 13 } },
    };

    private static TensorProto Tensor(string name, byte[]? raw = null, float[]? typed = null, (string Key, string Value)[]? external = null)
    {
        TensorProto tensor = new() { Name = name, DataType = (int)TensorProto.Types.DataType.Float, Dims = { 2, 3 } };
        if (raw is not null)
        {
            tensor.RawData = ByteString.CopyFrom(raw);
        }

        if (typed is not null)
        {
            tensor.FloatData.AddRange(typed);
        }

        if (external is not null)
        {
            tensor.DataLocation = TensorProto.Types.DataLocation.External;
            tensor.ExternalData.AddRange(external.Select(e => new StringStringEntryProto { Key = e.Key, Value = e.Value }));
        }

        return tensor;
    }

    private static byte[] Bytes(float[] values) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
