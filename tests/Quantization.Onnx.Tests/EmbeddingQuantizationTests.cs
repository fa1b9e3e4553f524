using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

public class EmbeddingQuantizationTests
{
    private const int Rows = 300, Columns = 64;

    private static readonly long[] Ids = [0, 7, 299, 7, -1, 150, 42];

    public static TheoryData<string> Schemes => ["int8 per row", "int8 asymmetric per row", "uint8 per row", "int8 per group 16", "uint8 asymmetric per group 32", "int4 per group 32", "uint4 asymmetric per group 16", "int4 per row"];

    [Theory]
    [MemberData(nameof(Schemes))]
    public void GatherBlockQuantized_GathersTheLibrarysDequantizedRows(string scheme)
    {
        float[] table = Table(Columns);
        OnnxModel model = OnnxModel.Parse(EmbeddingModel(table, Columns).ToByteArray());
        OnnxWeightQuantizationOptions options = new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1, Scheme = SchemeNamed(scheme) } };

        IReadOnlyList<OnnxWeightReport> reports = OnnxWeightQuantizer.Quantize(model, options);

        OnnxWeightReport report = Assert.Single(reports);
        Assert.Equal(("embed", "Gather", "table"), (report.Node, report.OpType, report.Weight));
        NodeProto gather = Assert.Single(model.Proto.Graph.Node);
        Assert.Equal(("GatherBlockQuantized", "com.microsoft"), (gather.OpType, gather.Domain));
        Assert.Contains(model.Proto.OpsetImport, o => o.Domain == "com.microsoft");
        Assert.DoesNotContain(model.Proto.Graph.Initializer, t => t.DataType == (int)TensorProto.Types.DataType.Float && t.Dims.Count == 2 && t.Dims[1] == Columns);
        float[] expected = ExpectedRows(table, Columns, options.Embeddings.Scheme);
        foreach (GraphOptimizationLevel level in new[] { GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_ALL })
        {
            Assert.Equal(expected, Gather(model.Proto.ToByteArray(), level));
        }
    }

    [Fact]
    public void DequantizeLinearOperator_GathersTheSameRows()
    {
        float[] table = Table(Columns);
        OnnxModel model = OnnxModel.Parse(EmbeddingModel(table, Columns).ToByteArray());
        OnnxWeightQuantizationOptions options = new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1, Operator = OnnxEmbeddingOperator.DequantizeLinear } };

        Assert.Single(OnnxWeightQuantizer.Quantize(model, options));

        Assert.Equal(["DequantizeLinear", "Gather"], model.Proto.Graph.Node.Select(n => n.OpType));
        Assert.Equal(ExpectedRows(table, Columns, options.Embeddings.Scheme), Gather(model.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_ALL));
    }

    [Theory]
    [InlineData("int4 per group 32")]
    [InlineData("uint4 asymmetric per group 16")]
    [InlineData("int8 per group 16")]
    public void DequantizeLinearOperator_AtOpset21_TakesGroupsAndInt4(string scheme)
    {
        float[] table = Table(Columns);
        ModelProto proto = EmbeddingModel(table, Columns);
        proto.OpsetImport[0].Version = 21;
        proto.IrVersion = 10;
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxWeightQuantizationOptions options = new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1, Operator = OnnxEmbeddingOperator.DequantizeLinear, Scheme = SchemeNamed(scheme) } };

        Assert.Single(OnnxWeightQuantizer.Quantize(model, options));

        Assert.Equal(["DequantizeLinear", "Gather"], model.Proto.Graph.Node.Select(n => n.OpType));
        Assert.Equal(ExpectedRows(table, Columns, options.Embeddings.Scheme), Gather(model.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_ALL));
    }

    [Fact]
    public void RowsNotAPowerOfTwo_AreOneBlockEach()
    {
        const int Width = 384; // all-MiniLM-L6-v2's: one block of 512 per row
        float[] table = Table(Width);
        OnnxModel model = OnnxModel.Parse(EmbeddingModel(table, Width).ToByteArray());
        OnnxWeightQuantizationOptions options = new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1 } };

        OnnxWeightQuantizer.Quantize(model, options);

        Assert.Equal(512, model.Proto.Graph.Node[0].Attribute.Single(a => a.Name == "block_size").I);
        Assert.Equal([Rows, 1L], model.Proto.Graph.Initializer.Single(t => t.DataType == (int)TensorProto.Types.DataType.Float).Dims);
        Assert.Equal(ExpectedRows(table, Width, options.Embeddings.Scheme), Gather(model.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_ALL));
    }

    [Theory]
    [InlineData("int4 per group 32")]
    [InlineData("uint4 asymmetric per group 16")]
    [InlineData("int8 per group 16")]
    public void OddRowsAndAPartialLastGroup_GatherTheLibrarysRows(string scheme)
    {
        // 39 columns: groups of 16 or 32 leave a partial last group (ONNX blocked semantics), and 4-bit rows share bytes
        // (the table is packed two a byte over its flattened elements).
        const int Width = 39;
        float[] table = Table(Width);
        OnnxModel model = OnnxModel.Parse(EmbeddingModel(table, Width).ToByteArray());
        OnnxWeightQuantizationOptions options = new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1, Scheme = SchemeNamed(scheme) } };

        OnnxWeightQuantizer.Quantize(model, options);

        Assert.Equal(ExpectedRows(table, Width, options.Embeddings.Scheme), Gather(model.Proto.ToByteArray(), GraphOptimizationLevel.ORT_ENABLE_ALL));
    }

    [Fact]
    public void SmallTables_ExcludedGathersAndDisabledOption_StayFloat()
    {
        byte[] original = EmbeddingModel(Table(Columns), Columns).ToByteArray();
        OnnxWeightQuantizationOptions[] unchanged =
        [
            new(), // 12,000 elements: under the default million
            new() { Embeddings = null },
            new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1 }, ExcludeNodes = { new NamePattern("embed") } },
            new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = (Rows * Columns) + 1 } },
        ];

        foreach (OnnxWeightQuantizationOptions options in unchanged)
        {
            OnnxModel model = OnnxModel.Parse(original);
            Assert.Empty(OnnxWeightQuantizer.Quantize(model, options));
            Assert.Equal(original, model.Proto.ToByteArray());
        }
    }

    [Fact]
    public void TableAlsoReadThroughATranspose_IsStoredOnce_BehindOneDequantizeLinear()
    {
        // A tied output projection: logits = h · tableᵀ, with the table also the token embedding.
        float[] table = Table(Columns);
        ModelProto proto = Model(
            "tied",
            [
                Node("Gather", "embed", ["table", "ids"], ["h"]),
                Node("Transpose", "head_t", ["table"], ["table_t"], Ints("perm", 1, 0)),
                Node("MatMul", "head", ["h", "table_t"], ["logits"]),
            ],
            [Tensor("table", table, Rows, Columns)],
            [Indices()],
            [Value("logits", Ids.Length, Rows)]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        OnnxWeightQuantizationOptions options = new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1 } };

        Assert.Single(OnnxWeightQuantizer.Quantize(model, options));

        Assert.Equal(["DequantizeLinear", "Gather", "Transpose", "MatMul"], model.Proto.Graph.Node.Select(n => n.OpType));
        Assert.Equal(TensorProto.Types.DataType.Int8, (TensorProto.Types.DataType)model.Proto.Graph.Initializer.Single(t => t.Dims.SequenceEqual([Rows, Columns])).DataType);
    }

    [Fact]
    public void TableThatAGemmQuantizerTook_IsReadFromItsDequantizeLinear()
    {
        // Tied through Gemm's transB: the weight quantizer stores the table as int8 per row (its channel axis 0), once.
        float[] table = Table(Columns);
        ModelProto proto = Model(
            "tied",
            [Node("Gather", "embed", ["table", "ids"], ["h"]), Node("Gemm", "head", ["h", "table"], ["logits"], Int("transB", 1))],
            [Tensor("table", table, Rows, Columns)],
            [Indices()],
            [Value("logits", Ids.Length, Rows)]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());

        OnnxWeightReport report = Assert.Single(OnnxWeightQuantizer.Quantize(model, new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1 } }));

        Assert.Equal("Gemm", report.OpType);
        Assert.Equal(["DequantizeLinear", "Gather", "Gemm"], model.Proto.Graph.Node.Select(n => n.OpType));
    }

    [Fact]
    public async Task StaticAndDynamicQuantizers_QuantizeEmbeddingsToo()
    {
        float[] table = Table(Columns);
        ModelProto proto = Model(
            "encoder",
            [Node("Gather", "embed", ["table", "ids"], ["h"]), Node("MatMul", "fc", ["h", "w"], ["y"])],
            [Tensor("table", table, Rows, Columns), Tensor("w", Random(Columns * 8, 5), Columns, 8)],
            [Indices()],
            [Value("y", Ids.Length, 8)]);
        OnnxEmbeddingQuantizationOptions embeddings = new() { MinElements = 1 };

        OnnxModel dynamicModel = OnnxModel.Parse(proto.ToByteArray());
        OnnxDynamicQuantizationResult dynamicResult = OnnxDynamicQuantizer.Quantize(dynamicModel, new OnnxDynamicQuantizationOptions { Embeddings = embeddings });
        OnnxModel staticModel = OnnxModel.Parse(proto.ToByteArray());
        OnnxStaticQuantizationResult staticResult = await OnnxStaticQuantizer.QuantizeAsync(
            staticModel,
            CalibrationDataSource.FromBatches([IdsFeed()]),
            new OnnxStaticQuantizationOptions { Embeddings = embeddings });

        foreach ((OnnxModel model, IReadOnlyList<OnnxWeightReport> weights) in new[] { (dynamicModel, dynamicResult.Weights), (staticModel, staticResult.Weights) })
        {
            Assert.Equal(["fc", "embed"], weights.Select(w => w.Node));
            Assert.Contains(model.Proto.Graph.Node, n => n.OpType == "GatherBlockQuantized");
            using InferenceSession session = new(model.Proto.ToByteArray());
            using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> outputs = session.Run(IdsFeed());
            Assert.Equal(Ids.Length * 8, outputs[0].AsEnumerable<float>().Count());
        }
    }

    [Fact]
    public void Options_RefuseWhatGatherBlockQuantizedDoesNotRun()
    {
        OnnxEmbeddingQuantizationOptions options = new();
        Assert.Throws<ArgumentException>(() => options.Scheme = QuantizationScheme.Int8PerTensor());
        Assert.Throws<ArgumentException>(() => options.Scheme = QuantizationScheme.Int8PerChannel().WithGranularity(QuantizationGranularity.PerGroup(8, axis: 1)));
        Assert.Throws<ArgumentException>(() => options.Scheme = QuantizationScheme.Int8PerChannel().WithGranularity(QuantizationGranularity.PerGroup(48, axis: 1)));
        Assert.Throws<ArgumentException>(() => options.Scheme = QuantizationScheme.Int8PerChannel().WithGranularity(QuantizationGranularity.PerToken));
        Assert.Throws<ArgumentNullException>(() => options.Scheme = null!);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.MinElements = -1);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.Operator = (OnnxEmbeddingOperator)7);

        OnnxModel model = OnnxModel.Parse(EmbeddingModel(Table(Columns), Columns).ToByteArray());
        OnnxWeightQuantizationOptions perGroupDequantize = new()
        {
            Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1, Operator = OnnxEmbeddingOperator.DequantizeLinear, Scheme = SchemeNamed("int8 per group 16") },
        };
        Assert.Throws<NotSupportedException>(() => OnnxWeightQuantizer.Quantize(model, perGroupDequantize));
        perGroupDequantize.Embeddings.Scheme = SchemeNamed("int4 per row");
        Assert.Throws<NotSupportedException>(() => OnnxWeightQuantizer.Quantize(model, perGroupDequantize));
    }

    [Fact]
    public void NaNInATable_IsRefusedByName()
    {
        float[] table = Table(Columns);
        table[123] = float.NaN;
        OnnxModel model = OnnxModel.Parse(EmbeddingModel(table, Columns).ToByteArray());

        Exception error = Assert.ThrowsAny<Exception>(() => OnnxWeightQuantizer.Quantize(model, new() { Embeddings = new OnnxEmbeddingQuantizationOptions { MinElements = 1 } }));

        Assert.Contains("table", error.Message, StringComparison.Ordinal);
    }

    internal static QuantizationScheme SchemeNamed(string name) => name switch
    {
        "int8 per row" => QuantizationScheme.Int8PerChannel(),
        "int8 asymmetric per row" => new QuantizationScheme(QuantizedType.Int8, symmetric: false, QuantizationGranularity.PerChannel()),
        "uint8 per row" => new QuantizationScheme(QuantizedType.UInt8, symmetric: true, QuantizationGranularity.PerChannel()),
        "int8 per group 16" => new QuantizationScheme(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerGroup(16, axis: 1)),
        "uint8 asymmetric per group 32" => new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerGroup(32, axis: 1)),
        "int4 per group 32" => QuantizationScheme.Int4PerGroup(32),
        "uint4 asymmetric per group 16" => QuantizationScheme.Int4PerGroup(16, symmetric: false),
        "int4 per row" => new QuantizationScheme(QuantizedType.Int4, symmetric: true, QuantizationGranularity.PerChannel()),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, null),
    };

    /// <summary>Rows of different ranges, one with a constant row and one all zero.</summary>
    private static float[] Table(int columns)
    {
        float[] table = Random(Rows * columns, 11, 2);
        for (int r = 0; r < Rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                table[(r * columns) + c] *= 1 + (r % 13) + (r % 3 == 0 ? c : 0);
            }
        }

        Array.Fill(table, 0.25f, 7 * columns, columns);
        Array.Clear(table, 150 * columns, columns);
        return table;
    }

    /// <summary>The rows <see cref="Ids"/> pick from the table quantized by the library, dequantized by the library.</summary>
    private static float[] ExpectedRows(float[] table, int columns, QuantizationScheme scheme)
    {
        QuantizationGranularity granularity = scheme.Granularity.Kind == GranularityKind.PerGroup ? QuantizationGranularity.PerGroup(scheme.Granularity.GroupSize, axis: 1) : QuantizationGranularity.PerChannel(0);
        float[] restored = QuantizedTensor.Quantize(table, [Rows, columns], scheme.WithGranularity(granularity)).Dequantize();
        return [.. Ids.SelectMany(id => restored.AsSpan((int)((id + Rows) % Rows) * columns, columns).ToArray())];
    }

    private static ModelProto EmbeddingModel(float[] table, int columns) => Model(
        "embedding",
        [Node("Gather", "embed", ["table", "ids"], ["h"])],
        [Tensor("table", table, Rows, columns)],
        [Indices()],
        [Value("h", Ids.Length, columns)]);

    private static ValueInfoProto Indices()
    {
        ValueInfoProto value = Value("ids", Ids.Length);
        value.Type.TensorType.ElemType = (int)TensorProto.Types.DataType.Int64;
        return value;
    }

    private static IReadOnlyCollection<NamedOnnxValue> IdsFeed() =>
        [NamedOnnxValue.CreateFromTensor("ids", new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<long>(Ids, [Ids.Length]))];

    private static float[] Gather(byte[] model, GraphOptimizationLevel level)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = level };
        using InferenceSession session = new(model, options);
        using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> outputs = session.Run(IdsFeed());
        return [.. outputs[0].AsEnumerable<float>()];
    }
}
