using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Tokenizers;

using Quantization.Onnx.Protos;
using Quantization.Samples;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

public sealed class OnnxCalibrationDataTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("calibration-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task MiniLM_FromAnNpzDirectory_ObservesTheRangesOfTheSameFeedsGivenDirectly()
    {
        OnnxModel model = OnnxModel.Parse(MiniLM.LoadModel());
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        IReadOnlyCollection<NamedOnnxValue>[] feeds = [.. MiniLM.Sentences.Take(6).Select(s => MiniLM.Feed(tokenizer, s))];
        for (int i = 0; i < feeds.Length; i++)
        {
            // Stored and compressed files alternate; one batch has int32 ids (numpy's default integer on Windows), which widen exactly.
            Dictionary<string, NumPyArray> arrays = feeds[i].ToDictionary(f => f.Name, f => NumPyArray.Create<long>(f.AsTensor<long>().ToArray(), [.. f.AsTensor<long>().Dimensions]));
            if (i == 3)
            {
                arrays["input_ids"] = NumPyArray.Create<int>([.. feeds[i].First(f => f.Name == "input_ids").AsTensor<long>().Select(v => (int)v)], [.. arrays["input_ids"].Shape]);
            }

            NpzWriter.Write(Path.Combine(_directory, $"batch{i:D2}.npz"), arrays, compress: i % 2 == 1);
        }

        string[] tensors = [.. model.Proto.Graph.Node.Where(n => n.OpType is "MatMul" or "Softmax" or "Erf").Select(n => n.Output[0])];
        Assert.True(tensors.Length >= 48);
        IReadOnlyDictionary<string, QuantizationParameters> direct = await Calibrate(model, tensors, CalibrationDataSource.FromBatches(feeds));
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> source = OnnxCalibrationData.FromDirectory(model, _directory);
        Assert.Equal(feeds.Length, source.Count);
        IReadOnlyDictionary<string, QuantizationParameters> fromFiles = await Calibrate(model, tensors, source);
        Assert.Equal(tensors.Length, fromFiles.Count);
        foreach (string tensor in tensors)
        {
            Assert.Equal(direct[tensor].Scales.ToArray(), fromFiles[tensor].Scales.ToArray());
            Assert.Equal(direct[tensor].ZeroPoints.ToArray(), fromFiles[tensor].ZeroPoints.ToArray());
        }
    }

    [Fact]
    public async Task Conversions_AreThoseNumPyArrayAllows()
    {
        OnnxModel model = TwoInputs();
        Write("a.npz", ("ids", NumPyArray.Create<int>([1, -2, 3], 1, 3)), ("x", NumPyArray.Create<double>([0.1, 1e300, -0.5, 2, 3, 4], 2, 3)));
        NamedOnnxValue[] feed = [.. (await Single(OnnxCalibrationData.FromDirectory(model, _directory)))];
        Assert.Equal(["ids", "x"], feed.Select(f => f.Name));
        Assert.Equal([1L, -2, 3], feed[0].AsTensor<long>().ToArray());
        Assert.Equal([0.1f, float.PositiveInfinity, -0.5f, 2f, 3f, 4f], feed[1].AsTensor<float>().ToArray());
        Assert.Equal([2, 3], feed[1].AsTensor<float>().Dimensions.ToArray());
    }

    [Theory]
    [InlineData("missing", "no array for the model input 'x'")]
    [InlineData("extra", "array 'mask', which is not an input")]
    [InlineData("float ids", "the model input 'ids' is Float32, which does not convert to the input's Int64")]
    [InlineData("int64 x", "the model input 'x' is Int64, which does not convert to the input's Float32")]
    [InlineData("rank", "the model input 'x' has rank 1 (shape (6)) but the input has rank 2 ([2, 3])")]
    [InlineData("fixed dimension", "the model input 'x' has shape (3, 2) but the input's dimension 0 is 2 ([2, 3])")]
    public async Task BadBatches_NameTheFileAndTheInput(string problem, string message)
    {
        NumPyArray ids = NumPyArray.Create<long>([5, 6, 7, 8], 2, 2), x = NumPyArray.Create<float>(new float[6], 2, 3);
        (string, NumPyArray)[] arrays = problem switch
        {
            "missing" => [("ids", ids)],
            "extra" => [("ids", ids), ("x", x), ("mask", ids)],
            "float ids" => [("ids", NumPyArray.Create<float>([1f], 1, 1)), ("x", x)],
            "int64 x" => [("ids", ids), ("x", NumPyArray.Create<long>(new long[6], 2, 3))],
            "rank" => [("ids", ids), ("x", NumPyArray.Create<float>(new float[6], 6))],
            _ => [("ids", ids), ("x", NumPyArray.Create<float>(new float[6], 3, 2))],
        };
        Write("good.npz", ("ids", ids), ("x", x));
        Write("zbad.npz", arrays);
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> source = OnnxCalibrationData.FromDirectory(TwoInputs(), _directory);
        InvalidDataException error = await Assert.ThrowsAsync<InvalidDataException>(async () =>
        {
            await foreach (IReadOnlyCollection<NamedOnnxValue> _ in source.ReadBatchesAsync())
            {
            }
        });
        Assert.Contains("zbad.npz", error.Message, StringComparison.Ordinal);
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task NpyFiles_FeedASingleInputModel_AndOnlyThat()
    {
        OnnxModel single = OnnxModel.Parse(Model("relu", [Node("Relu", "relu", ["x"], ["y"])], [], [Value("x", 2, 3)], [Value("y", 2, 3)]).ToByteArray());
        NpyWriter.Write(Path.Combine(_directory, "0.npy"), NumPyArray.Create<Half>([(Half)1, (Half)(-2), (Half)3, (Half)4, (Half)5, (Half)6], 2, 3));
        NamedOnnxValue feed = (await Single(OnnxCalibrationData.FromDirectory(single, _directory))).Single();
        Assert.Equal("x", feed.Name);
        Assert.Equal([1f, -2f, 3f, 4f, 5f, 6f], feed.AsTensor<float>().ToArray());

        InvalidDataException several = Assert.Throws<InvalidDataException>(() => OnnxCalibrationData.FromDirectory(TwoInputs(), _directory));
        Assert.Contains("one input; this one has 2", several.Message, StringComparison.Ordinal);
        Assert.Contains("ids: Int64, x: Float32", several.Message, StringComparison.Ordinal);

        Write("1.npz", ("x", NumPyArray.Create<float>(new float[6], 2, 3)));
        Assert.Contains("both .npz (1) and .npy (1)", Assert.Throws<InvalidDataException>(() => OnnxCalibrationData.FromDirectory(single, _directory)).Message, StringComparison.Ordinal);
        string empty = Directory.CreateDirectory(Path.Combine(_directory, "empty")).FullName;
        Assert.Contains("no .npz or .npy files", Assert.Throws<InvalidDataException>(() => OnnxCalibrationData.FromDirectory(single, empty)).Message, StringComparison.Ordinal);
        Assert.Throws<DirectoryNotFoundException>(() => OnnxCalibrationData.FromDirectory(single, Path.Combine(_directory, "missing")));
        Assert.Throws<ArgumentNullException>(() => OnnxCalibrationData.FromDirectory(null!, _directory));
    }

    [Fact]
    public void InputsWithoutANumPyType_AreNotSupported()
    {
        ModelProto proto = Model("relu", [Node("Relu", "relu", ["x"], ["y"])], [], [Value("x", 2, 3)], [Value("y", 2, 3)]);
        proto.Graph.Input[0].Type.TensorType.ElemType = (int)TensorProto.Types.DataType.String;
        Write("0.npz", ("x", NumPyArray.Create<float>(new float[6], 2, 3)));
        Assert.Contains("'x'", Assert.Throws<NotSupportedException>(() => OnnxCalibrationData.FromDirectory(OnnxModel.Parse(proto.ToByteArray()), _directory)).Message, StringComparison.Ordinal);
    }

    private static async Task<IReadOnlyDictionary<string, QuantizationParameters>> Calibrate(OnnxModel model, string[] tensors, ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> source)
    {
        using OnnxCalibrator calibrator = new(model, tensors, _ => new MinMaxObserver(QuantizationScheme.UInt8PerTensorAsymmetric()));
        await calibrator.RunAsync(source);
        return calibrator.ComputeParameters();
    }

    private static async Task<IReadOnlyCollection<NamedOnnxValue>> Single(ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> source)
    {
        List<IReadOnlyCollection<NamedOnnxValue>> batches = [];
        await foreach (IReadOnlyCollection<NamedOnnxValue> batch in source.ReadBatchesAsync())
        {
            batches.Add(batch);
        }

        return Assert.Single(batches);
    }

    /// <summary>ids int64 [batch, ?] -> Cast(float) -> ReduceSum = s; x float [2, 3] -> Add(s) = y.</summary>
    private static OnnxModel TwoInputs()
    {
        ValueInfoProto ids = new() { Name = "ids", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Int64, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "batch" }, new TensorShapeProto.Types.Dimension() } } } } };
        ModelProto proto = Model(
            "two-inputs",
            [Node("Cast", "cast", ["ids"], ["ids_float"], new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = 1 }), Node("ReduceSum", "sum", ["ids_float"], ["s"]), Node("Add", "add", ["x", "s"], ["y"])],
            [],
            [ids, Value("x", 2, 3)],
            [Value("y", 2, 3)]);
        return OnnxModel.Parse(proto.ToByteArray());
    }

    private void Write(string file, params (string Name, NumPyArray Array)[] arrays) =>
        NpzWriter.Write(Path.Combine(_directory, file), arrays.Select(a => new KeyValuePair<string, NumPyArray>(a.Name, a.Array)));
}
