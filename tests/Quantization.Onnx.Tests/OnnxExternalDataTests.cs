using System.Globalization;
using System.Runtime.InteropServices;

using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx.Tests;

public sealed class OnnxExternalDataTests : IDisposable
{
    private const TensorProto.Types.DataType Float = TensorProto.Types.DataType.Float;

    private readonly string _directory = Directory.CreateTempSubdirectory("onnx-external-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void Always_WritesAlignedDataThatOrtRunsIdentically_AndLeavesProtoUnchanged()
    {
        OnnxModel model = OnnxModel.Parse(MixedModel().ToByteArray());
        ModelProto before = model.Proto.Clone();
        string inline = Path.Combine(Folder("inline"), "model.onnx");
        string external = Path.Combine(Folder("external"), "model.onnx");
        model.Save(inline, new OnnxSaveOptions { ExternalData = ExternalDataPolicy.Never });
        model.Save(external, new OnnxSaveOptions { ExternalData = ExternalDataPolicy.Always });

        Assert.Equal(before, model.Proto);
        Assert.Equal(["model.onnx", "model.onnx.data"], Files("external"));
        Assert.Equal(["model.onnx"], Files("inline"));
        Assert.Equal(model.Proto, OnnxModel.Load(inline).Proto);

        OnnxModel saved = OnnxModel.Load(external);
        long dataLength = new FileInfo(external + ".data").Length;
        List<(string Name, long Offset, long Length)> placed = [];
        foreach (TensorProto tensor in AllTensors(saved.Proto.Graph))
        {
            if (tensor.Name is "scale" or "zero")
            {
                Assert.Equal(TensorProto.Types.DataLocation.Default, tensor.DataLocation);
                Assert.False(tensor.RawData.IsEmpty);
                continue;
            }

            Assert.Equal(TensorProto.Types.DataLocation.External, tensor.DataLocation);
            Assert.True(tensor.RawData.IsEmpty && tensor.FloatData.Count == 0 && tensor.Int32Data.Count == 0 && tensor.Int64Data.Count == 0 && tensor.DoubleData.Count == 0, tensor.Name);
            Dictionary<string, string> entries = tensor.ExternalData.ToDictionary(e => e.Key, e => e.Value);
            Assert.Equal("model.onnx.data", entries["location"]);
            long offset = long.Parse(entries["offset"], CultureInfo.InvariantCulture);
            long length = long.Parse(entries["length"], CultureInfo.InvariantCulture);
            Assert.Equal(0, offset % (length >= OnnxSaveOptions.PageAlignment ? OnnxSaveOptions.PageAlignment : OnnxSaveOptions.SmallTensorAlignment));
            Assert.InRange(offset + length, 0, dataLength);
            placed.Add((tensor.Name, offset, length));
        }

        Assert.Equal(["b", "c2", "d", "h16", "i", "q", "w1"], placed.Select(p => p.Name).Order());
        placed.Sort((a, b) => a.Offset.CompareTo(b.Offset));
        Assert.All(placed.Zip(placed.Skip(1)), pair => Assert.True(pair.First.Offset + pair.First.Length <= pair.Second.Offset));

        // Typed fields became raw little-endian bytes: the reloaded floats match, and ORT computes the same output.
        Assert.Equal(model.ReadFloats(model.GetInitializer("w1")), saved.ReadFloats(saved.GetInitializer("w1")));
        Assert.Equal(model.ReadFloats(ConstantValue(model.Proto, "c2")), saved.ReadFloats(ConstantValue(saved.Proto, "c2")));
        float[] x = Values(64, 7);
        float[] expected = Run(inline, x);
        Assert.Equal(expected, Run(external, x));
        Assert.Contains(expected, v => v != 0);

        // Saving the saved model (external tensors now copied from its data file) into a new directory changes nothing.
        string again = Path.Combine(Folder("again"), "model.onnx");
        saved.Save(again);
        Assert.Equal(File.ReadAllBytes(external + ".data"), File.ReadAllBytes(again + ".data"));
        Assert.Equal(expected, Run(again, x));
    }

    [Fact]
    public void ExternalTensors_AreCopiedFromTheSourceDirectory_WhenSavedElsewhere()
    {
        string source = Folder("source");
        Directory.CreateDirectory(Path.Combine(source, "consts"));
        float[] w1 = Values(64 * 32, 1);
        float[] c = Values(32 * 16, 2);
        File.WriteAllBytes(Path.Combine(source, "weights.bin"), [.. new byte[100], .. Bytes(w1)]);
        File.WriteAllBytes(Path.Combine(source, "consts", "c.bin"), [.. new byte[12], .. Bytes(c), 9, 9]);
        ModelProto proto = ChainModel(
            External("w1", [64, 32], "weights.bin", 100, w1.Length * 4),
            External("c", [32, 16], "consts/c.bin", 12, c.Length * 4));
        File.WriteAllBytes(Path.Combine(source, "model.onnx"), proto.ToByteArray());
        OnnxModel model = OnnxModel.Load(Path.Combine(source, "model.onnx"));
        float[] x = Values(64, 3);
        float[] expected = Run(Path.Combine(source, "model.onnx"), x);

        // The data file may not replace the file the model's own tensors are read from.
        InvalidOperationException clash = Assert.Throws<InvalidOperationException>(() => model.Save(Path.Combine(source, "other.onnx"), new OnnxSaveOptions { ExternalDataFileName = "weights.bin" }));
        Assert.Contains("'w1'", clash.Message, StringComparison.Ordinal);

        string target = Path.Combine(Folder("target"), "model.onnx");
        string inline = Path.Combine(Folder("inline"), "model.onnx");
        model.Save(target); // Auto: the model already stores tensors externally, so it keeps doing so.
        model.Save(inline, new OnnxSaveOptions { ExternalData = ExternalDataPolicy.Never });
        Directory.Delete(source, recursive: true);

        Assert.Equal(["model.onnx", "model.onnx.data"], Files("target"));
        Assert.Equal(["model.onnx"], Files("inline"));
        OnnxModel copied = OnnxModel.Load(target);
        Assert.Equal(w1, copied.ReadFloats(copied.GetInitializer("w1")));
        Assert.Equal(c, copied.ReadFloats(ConstantValue(copied.Proto, "c")));
        Assert.Equal(expected, Run(target, x));
        Assert.Equal(expected, Run(inline, x));
        OnnxModel inlined = OnnxModel.Load(inline);
        Assert.All(AllTensors(inlined.Proto.Graph), t => Assert.Equal(TensorProto.Types.DataLocation.Default, t.DataLocation));
        Assert.Equal(c, inlined.ReadFloats(ConstantValue(inlined.Proto, "c")));
    }

    [Fact]
    public async Task ModelWithExternalData_CalibratesStatic_AndWithGptq()
    {
        // Both weights go to the data file; ONNX Runtime must find it although the calibrator edits the model in memory.
        string source = Path.Combine(Folder("source"), "model.onnx");
        OnnxModel.Parse(ChainModel(Inline("w1", [64, 32], Values(64 * 32, 1)), Inline("c", [32, 16], Values(32 * 16, 2))).ToByteArray())
            .Save(source, new OnnxSaveOptions { ExternalData = ExternalDataPolicy.Always });
        Assert.Equal(["model.onnx", "model.onnx.data"], Files("source"));
        float[][] xs = [.. Enumerable.Range(0, 8).Select(i => Values(64, 100 + i))];
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> Data() => CalibrationDataSource.FromGenerator(xs.Length, i => TestGraphs.Feed("x", xs[i], 1, 64));

        OnnxModel forStatic = OnnxModel.Load(source);
        OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(forStatic, Data(), new OnnxStaticQuantizationOptions { Scheme = OrtInt8Kernels.WeightScheme });
        Assert.Equal(["h", "x"], result.Activations.Keys.Order(StringComparer.Ordinal));
        string staticPath = Path.Combine(Folder("static"), "model.onnx");
        forStatic.Save(staticPath);

        OnnxModel forGptq = OnnxModel.Load(source);
        Assert.Equal(2, (await OnnxWeightQuantizer.QuantizeAsync(forGptq, Data(), new OnnxWeightQuantizationOptions { BiasCorrection = false, Gptq = new GptqOptions() })).Count);
        string gptqPath = Path.Combine(Folder("gptq"), "model.onnx");
        forGptq.Save(gptqPath);

        foreach (float[] x in xs)
        {
            float[] expected = Run(source, x);
            Assert.True(TestGraphs.Cosine(expected, Run(staticPath, x)) > 0.99, "static");
            Assert.True(TestGraphs.Cosine(expected, Run(gptqPath, x)) > 0.999, "gptq");
        }
    }

    [Fact]
    public void FailedSaves_LeaveNoTargetAndNoTemporaryFile()
    {
        // An external source shorter than the tensor it holds: refused, naming the tensor and the file.
        string source = Folder("source");
        float[] w1 = Values(64 * 32, 1);
        File.WriteAllBytes(Path.Combine(source, "weights.bin"), Bytes(w1)[..^4]);
        File.WriteAllBytes(Path.Combine(source, "model.onnx"), ChainModel(External("w1", [64, 32], "weights.bin", 0, w1.Length * 4), Inline("c", [32, 16], Values(32 * 16, 2))).ToByteArray());
        OnnxModel truncated = OnnxModel.Load(Path.Combine(source, "model.onnx"));
        string target = Folder("target");
        InvalidDataException shortSource = Assert.Throws<InvalidDataException>(() => truncated.Save(Path.Combine(target, "model.onnx")));
        Assert.Contains("'w1'", shortSource.Message, StringComparison.Ordinal);
        Assert.Contains("weights.bin", shortSource.Message, StringComparison.Ordinal);
        Assert.Empty(Files("target"));

        // A tensor that fails after the data file has been started: its typed field is one value short.
        TensorProto broken = new() { Name = "c", DataType = (int)Float, Dims = { 32, 16 } };
        broken.FloatData.Add(Values((32 * 16) - 1, 2));
        OnnxModel late = OnnxModel.Parse(ChainModel(Inline("w1", [64, 32], w1), broken).ToByteArray());
        InvalidDataException shortField = Assert.Throws<InvalidDataException>(() => late.Save(Path.Combine(target, "model.onnx"), new OnnxSaveOptions { ExternalData = ExternalDataPolicy.Always }));
        Assert.Contains("'c'", shortField.Message, StringComparison.Ordinal);
        Assert.Contains("float_data", shortField.Message, StringComparison.Ordinal);
        Assert.Empty(Files("target"));

        // The model cannot be renamed into place (the target is a directory) after the data file was: the data file
        // that was there before is put back.
        OnnxModel good = OnnxModel.Parse(ChainModel(Inline("w1", [64, 32], w1), Inline("c", [32, 16], Values(32 * 16, 2))).ToByteArray());
        Directory.CreateDirectory(Path.Combine(target, "blocked.onnx"));
        File.WriteAllText(Path.Combine(target, "blocked.onnx.data"), "previous");
        Assert.ThrowsAny<IOException>(() => good.Save(Path.Combine(target, "blocked.onnx"), new OnnxSaveOptions { ExternalData = ExternalDataPolicy.Always }));
        Assert.Equal(["blocked.onnx.data"], Files("target"));
        Assert.Equal("previous", File.ReadAllText(Path.Combine(target, "blocked.onnx.data")));

        // The target directory is gone.
        Assert.ThrowsAny<IOException>(() => good.Save(Path.Combine(_directory, "missing", "model.onnx"), new OnnxSaveOptions { ExternalData = ExternalDataPolicy.Always }));
        Assert.False(Directory.Exists(Path.Combine(_directory, "missing")));

        // Bad options are refused before anything is written.
        Assert.Throws<ArgumentException>(() => good.Save(Path.Combine(target, "model.onnx"), new OnnxSaveOptions { ExternalDataFileName = "../escape.data" }));
        Assert.Throws<ArgumentException>(() => good.Save(Path.Combine(target, "model.onnx"), new OnnxSaveOptions { ExternalDataFileName = "model.onnx" }));
        Assert.Throws<ArgumentOutOfRangeException>(() => good.Save(Path.Combine(target, "model.onnx"), new OnnxSaveOptions { SizeThreshold = -1 }));
        Assert.Equal(["blocked.onnx.data"], Files("target"));
    }

    [Fact]
    public void Never_RefusesAModelOver2GB_BeforeWritingAnything()
    {
        // 3.2 GB of external weights in a sparse file: no disk space used, and nothing is read.
        string source = Folder("source");
        const long Length = 800_000_000L * sizeof(float);
        using (FileStream sparse = new(Path.Combine(source, "huge.bin"), FileMode.CreateNew))
        {
            sparse.SetLength(Length);
        }

        ModelProto proto = ChainModel(Inline("w1", [64, 32], Values(64 * 32, 1)), Inline("c", [32, 16], Values(32 * 16, 2)));
        proto.Graph.Initializer.Add(External("huge", [800_000_000], "huge.bin", 0, Length));
        File.WriteAllBytes(Path.Combine(source, "model.onnx"), proto.ToByteArray());
        OnnxModel model = OnnxModel.Load(Path.Combine(source, "model.onnx"));
        string target = Folder("target");
        InvalidOperationException error = Assert.Throws<InvalidOperationException>(() => model.Save(Path.Combine(target, "model.onnx"), new OnnxSaveOptions { ExternalData = ExternalDataPolicy.Never }));
        Assert.Contains("protobuf", error.Message, StringComparison.Ordinal);
        Assert.Empty(Files("target"));
    }

    /// <summary>
    /// EXPENSIVE (~2.1 GB written twice, ~2 GB of RAM in ONNX Runtime): eight 8192 x 8192 float MatMul weights, 2 GiB in
    /// all, are written to disk row by row as external data; saved with Auto, they go to a new data file and the
    /// <c>.onnx</c> stays tiny; ONNX Runtime loads and runs the result. Filter out with <c>--filter "Category!=Expensive"</c>.
    /// </summary>
    [Fact]
    [Trait("Category", "Expensive")]
    public void Expensive_ModelOver2GB_SavedWithAuto_GoesExternal_AndRunsInOrt()
    {
        const int N = 8192;
        const int Layers = 8;
        float[] scales = [2f, 0.5f, 1.5f, 0.75f, 1.25f, 0.5f, 2f, 1f];
        string source = Folder("source");
        long layerBytes = (long)N * N * sizeof(float);
        byte[] row = new byte[N * sizeof(float)];
        using (FileStream weights = new(Path.Combine(source, "weights.bin"), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
        {
            for (int layer = 0; layer < Layers; layer++)
            {
                for (int k = 0; k < N; k++)
                {
                    Span<float> values = MemoryMarshal.Cast<byte, float>(row.AsSpan());
                    values.Clear();
                    values[k] = scales[layer];
                    values[(k + layer + 1) % N] = 1f / 1024;
                    weights.Write(row);
                }
            }
        }

        ModelProto proto = new()
        {
            IrVersion = 8,
            OpsetImport = { new OperatorSetIdProto { Version = 13 } },
            Graph = new GraphProto { Name = "huge", Input = { Value("x", 1, N) }, Output = { Value("y", 1, N) } },
        };
        for (int layer = 0; layer < Layers; layer++)
        {
            proto.Graph.Initializer.Add(External($"w{layer}", [N, N], "weights.bin", layer * layerBytes, layerBytes));
            proto.Graph.Node.Add(new NodeProto { Name = $"matmul{layer}", OpType = "MatMul", Input = { layer == 0 ? "x" : $"h{layer}", $"w{layer}" }, Output = { layer == Layers - 1 ? "y" : $"h{layer + 1}" } });
        }

        File.WriteAllBytes(Path.Combine(source, "model.onnx"), proto.ToByteArray());
        OnnxModel model = OnnxModel.Load(Path.Combine(source, "model.onnx"));

        string target = Path.Combine(Folder("target"), "model.onnx");
        Assert.Throws<InvalidOperationException>(() => model.Save(target, new OnnxSaveOptions { ExternalData = ExternalDataPolicy.Never }));
        Assert.Empty(Files("target"));
        model.Save(target);
        File.Delete(Path.Combine(source, "weights.bin"));

        Assert.Equal(["model.onnx", "model.onnx.data"], Files("target"));
        Assert.InRange(new FileInfo(target).Length, 1, 4096);
        Assert.Equal(Layers * layerBytes, new FileInfo(target + ".data").Length); // Page-sized tensors need no padding.
        OnnxModel saved = OnnxModel.Load(target);
        Assert.All(saved.Proto.Graph.Initializer, t => Assert.Equal(0, long.Parse(t.ExternalData.Single(e => e.Key == "offset").Value, CultureInfo.InvariantCulture) % OnnxSaveOptions.PageAlignment));

        float[] x = Values(N, 5);
        double[] expected = [.. x.Select(v => (double)v)];
        for (int layer = 0; layer < Layers; layer++)
        {
            double[] next = new double[N];
            for (int n = 0; n < N; n++)
            {
                next[n] = (scales[layer] * expected[n]) + (expected[(n - layer - 1 + N) % N] / 1024);
            }

            expected = next;
        }

        using InferenceSession session = new(target);
        using OrtValue input = OrtValue.CreateTensorValueFromMemory(x, [1, N]);
        using RunOptions run = new();
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(run, ["x"], [input], ["y"]);
        float[] y = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        for (int n = 0; n < N; n++)
        {
            Assert.True(Math.Abs(y[n] - expected[n]) <= 1e-4 * (1 + Math.Abs(expected[n])), FormattableString.Invariant($"y[{n}] = {y[n]}, expected {expected[n]}"));
        }
    }

    private string Folder(string name) => Directory.CreateDirectory(Path.Combine(_directory, name)).FullName;

    private string[] Files(string folder) => [.. Directory.GetFileSystemEntries(Path.Combine(_directory, folder)).Select(Path.GetFileName).Where(n => n != "blocked.onnx").Order(StringComparer.Ordinal)!];

    private static IEnumerable<TensorProto> AllTensors(GraphProto graph) =>
        graph.Initializer.Concat(graph.Node.Where(n => n.OpType == "Constant").Select(n => n.Attribute.Single(a => a.Name == "value").T));

    private static TensorProto ConstantValue(ModelProto model, string output) =>
        model.Graph.Node.Single(n => n.OpType == "Constant" && n.Output[0] == output).Attribute.Single(a => a.Name == "value").T;

    /// <summary>
    /// x [1, 64] -> MatMul w1 (float raw) -> MatMul c2 (Constant, float_data) -> MatMul Cast(h16 (float16, int32_data))
    /// -> MatMul DequantizeLinear(q (int8, int32_data), scale) -> Gather i (int64_data) -> Add Cast(d (double_data))
    /// -> Where(b (bool, int32_data), ., zero) = y [1, 1024]. All but scale and zero are at least 1024 bytes.
    /// </summary>
    private static ModelProto MixedModel()
    {
        Random random = new(42);
        TensorProto c2 = new() { Name = "c2", DataType = (int)Float, Dims = { 32, 16 } };
        c2.FloatData.Add(Values(32 * 16, 2));
        TensorProto h16 = new() { Name = "h16", DataType = (int)TensorProto.Types.DataType.Float16, Dims = { 16, 32 } };
        h16.Int32Data.Add(Values(16 * 32, 3).Select(v => (int)BitConverter.HalfToUInt16Bits((Half)v)));
        TensorProto q = new() { Name = "q", DataType = (int)TensorProto.Types.DataType.Int8, Dims = { 32, 32 } };
        q.Int32Data.Add(Enumerable.Range(0, 32 * 32).Select(_ => random.Next(-128, 128)));
        TensorProto i = new() { Name = "i", DataType = (int)TensorProto.Types.DataType.Int64, Dims = { 1024 } };
        i.Int64Data.Add(Enumerable.Range(0, 1024).Select(_ => (long)random.Next(0, 32)));
        TensorProto d = new() { Name = "d", DataType = (int)TensorProto.Types.DataType.Double, Dims = { 1024 } };
        d.DoubleData.Add(Enumerable.Range(0, 1024).Select(_ => random.NextDouble() - 0.5));
        TensorProto b = new() { Name = "b", DataType = (int)TensorProto.Types.DataType.Bool, Dims = { 1024 } };
        b.Int32Data.Add(Enumerable.Range(0, 1024).Select(_ => random.Next(0, 2)));
        return new ModelProto
        {
            IrVersion = 8,
            OpsetImport = { new OperatorSetIdProto { Version = 13 } },
            Graph = new GraphProto
            {
                Name = "mixed",
                Input = { Value("x", 1, 64) },
                Output = { Value("y", 1, 1024) },
                Initializer = { Inline("w1", [64, 32], Values(64 * 32, 1)), h16, q, Inline("scale", [], [0.01f]), i, d, b, Inline("zero", [], [0f]) },
                Node =
                {
                    new NodeProto { Name = "mm1", OpType = "MatMul", Input = { "x", "w1" }, Output = { "h1" } },
                    new NodeProto { Name = "const", OpType = "Constant", Output = { "c2" }, Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = c2 } } },
                    new NodeProto { Name = "mm2", OpType = "MatMul", Input = { "h1", "c2" }, Output = { "h2" } },
                    new NodeProto { Name = "cast16", OpType = "Cast", Input = { "h16" }, Output = { "h16f" }, Attribute = { To(Float) } },
                    new NodeProto { Name = "mm3", OpType = "MatMul", Input = { "h2", "h16f" }, Output = { "h3" } },
                    new NodeProto { Name = "dq", OpType = "DequantizeLinear", Input = { "q", "scale" }, Output = { "qf" } },
                    new NodeProto { Name = "mm4", OpType = "MatMul", Input = { "h3", "qf" }, Output = { "h4" } },
                    new NodeProto { Name = "gather", OpType = "Gather", Input = { "h4", "i" }, Output = { "h5" }, Attribute = { new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 1 } } },
                    new NodeProto { Name = "castd", OpType = "Cast", Input = { "d" }, Output = { "df" }, Attribute = { To(Float) } },
                    new NodeProto { Name = "add", OpType = "Add", Input = { "h5", "df" }, Output = { "h6" } },
                    new NodeProto { Name = "where", OpType = "Where", Input = { "b", "h6", "zero" }, Output = { "y" } },
                },
            },
        };
    }

    /// <summary>x [1, 64] -> MatMul w1 [64, 32] (initializer) -> MatMul c [32, 16] (Constant node) = y [1, 16].</summary>
    private static ModelProto ChainModel(TensorProto w1, TensorProto c) => new()
    {
        IrVersion = 8,
        OpsetImport = { new OperatorSetIdProto { Version = 13 } },
        Graph = new GraphProto
        {
            Name = "chain",
            Input = { Value("x", 1, 64) },
            Output = { Value("y", 1, 16) },
            Initializer = { w1 },
            Node =
            {
                new NodeProto { Name = "mm1", OpType = "MatMul", Input = { "x", "w1" }, Output = { "h" } },
                new NodeProto { Name = "const", OpType = "Constant", Output = { "c" }, Attribute = { new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = c } } },
                new NodeProto { Name = "mm2", OpType = "MatMul", Input = { "h", "c" }, Output = { "y" } },
            },
        },
    };

    /// <summary>Runs a model with input x [1, 64] in ONNX Runtime, loaded from its file so that external data is found.</summary>
    private static float[] Run(string path, float[] x)
    {
        using InferenceSession session = new(path);
        using OrtValue input = OrtValue.CreateTensorValueFromMemory(x, [1, 64]);
        using RunOptions run = new();
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(run, ["x"], [input], ["y"]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static AttributeProto To(TensorProto.Types.DataType type) => new() { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (int)type };

    private static ValueInfoProto Value(string name, params long[] dims)
    {
        TensorShapeProto shape = new();
        shape.Dim.Add(dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)Float, Shape = shape } } };
    }

    private static TensorProto Inline(string name, long[] dims, float[] values) =>
        new() { Name = name, DataType = (int)Float, Dims = { dims }, RawData = ByteString.CopyFrom(Bytes(values)) };

    private static TensorProto External(string name, long[] dims, string location, long offset, long length) => new()
    {
        Name = name,
        DataType = (int)Float,
        Dims = { dims },
        DataLocation = TensorProto.Types.DataLocation.External,
        ExternalData =
        {
            new StringStringEntryProto { Key = "location", Value = location },
            new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) },
            new StringStringEntryProto { Key = "length", Value = length.ToString(CultureInfo.InvariantCulture) },
        },
    };

    private static float[] Values(int count, int seed)
    {
        Random random = new(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() - 0.5))];
    }

    private static byte[] Bytes(float[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
