using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Samples;

using Xunit.Abstractions;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>
/// all-MiniLM-L6-v2's word embeddings (30522 × 384, 47 MB of the 90 MB file) quantized to int8 per row on top of the
/// library's recipes: the sentence embeddings (sentences 100 and later) move by no more than 0.0005 of mean cosine.
/// </summary>
public class MiniLMEmbeddingTests(ITestOutputHelper output)
{
    private readonly BertTokenizer _tokenizer = MiniLM.LoadTokenizer();
    private readonly string[] _evaluation = [.. MiniLM.Sentences.Skip(100)];

    public static TheoryData<string> Recipes => ["weight-only QDQ", "weight-only MatMulNBits", "dynamic W8A8", "static W8A8"];

    [Theory]
    [MemberData(nameof(Recipes))]
    public async Task Int8Embeddings_KeepTheSentenceEmbeddings(string recipe)
    {
        byte[] original = MiniLM.LoadModel();
        float[][] reference = Embed(original, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        (byte[] floatTable, _) = await QuantizeAsync(original, recipe, embeddings: null);
        (byte[] int8Table, IReadOnlyList<OnnxWeightReport> weights) = await QuantizeAsync(original, recipe, new OnnxEmbeddingQuantizationOptions());

        OnnxWeightReport table = Assert.Single(weights, w => w.OpType == "Gather");
        Assert.Equal("embeddings.word_embeddings.weight", table.Weight);
        Assert.Single(OnnxModel.Parse(int8Table).Proto.Graph.Node, n => n.OpType == "GatherBlockQuantized");
        output.WriteLine(FormattableString.Invariant(
            $"MiniLM {recipe}: {original.Length:N0} bytes fp32, {floatTable.Length:N0} ({(double)floatTable.Length / original.Length:F3}x) with float embeddings, {int8Table.Length:N0} ({(double)int8Table.Length / original.Length:F3}x) with int8 embeddings (table SQNR {table.Report.SqnrDb:F1} dB)"));
        foreach (GraphOptimizationLevel level in new[] { GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_ALL })
        {
            double without = Report($"{recipe}, float embeddings, {level}", reference, Embed(floatTable, level));
            double with = Report($"{recipe}, int8 embeddings, {level}", reference, Embed(int8Table, level));
            Assert.True(Math.Abs(with - without) <= 0.0005, $"{recipe} at {level}: mean cosine {with} with int8 embeddings, {without} without");
        }
    }

    [Fact]
    public void DequantizeLinearGather_IsNotFolded_SoItDequantizesTheWholeTableOnEveryRun()
    {
        // ONNX Runtime's constant folding leaves DequantizeLinear alone (to keep QDQ patterns) at both levels, and no fusion
        // turns DequantizeLinear -> Gather into GatherBlockQuantized: the model is small on disk, but each run writes a float copy of the table.
        OnnxModel model = OnnxModel.Parse(MiniLM.LoadModel());
        OnnxWeightQuantizationOptions options = new() { Embeddings = new OnnxEmbeddingQuantizationOptions { Operator = OnnxEmbeddingOperator.DequantizeLinear } };
        options.OpTypes.Clear();
        OnnxWeightQuantizer.Quantize(model, options);
        byte[] bytes = model.Proto.ToByteArray();

        foreach (GraphOptimizationLevel level in new[] { GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_ALL })
        {
            string[] ops = OptimizedOpTypes(bytes, level);
            output.WriteLine($"{level}: {ops.Count(op => op == "DequantizeLinear")} DequantizeLinear, {ops.Count(op => op == "GatherBlockQuantized")} GatherBlockQuantized");
            Assert.Contains("DequantizeLinear", ops);
            Assert.DoesNotContain("GatherBlockQuantized", ops);
        }
    }

    internal static string[] OptimizedOpTypes(byte[] model, GraphOptimizationLevel level)
    {
        string optimized = Path.Combine(Path.GetTempPath(), $"optimized-{Guid.NewGuid():N}.onnx");
        try
        {
            using SessionOptions options = new() { GraphOptimizationLevel = level, OptimizedModelFilePath = optimized };
            using (new InferenceSession(model, options))
            {
            }

            return [.. OnnxModel.Load(optimized).Proto.Graph.Node.Select(n => n.OpType)];
        }
        finally
        {
            File.Delete(optimized);
        }
    }

    private async Task<(byte[] Model, IReadOnlyList<OnnxWeightReport> Weights)> QuantizeAsync(byte[] original, string recipe, OnnxEmbeddingQuantizationOptions? embeddings)
    {
        OnnxModel model = OnnxModel.Parse(original);
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibration = CalibrationDataSource.FromBatches(MiniLM.Sentences.Take(100).Select(s => MiniLM.Feed(_tokenizer, s)));
        IReadOnlyList<OnnxWeightReport> weights = recipe switch
        {
            "weight-only QDQ" => await OnnxWeightQuantizer.QuantizeAsync(model, calibration, new OnnxWeightQuantizationOptions { Embeddings = embeddings }),
            "weight-only MatMulNBits" => await OnnxWeightQuantizer.QuantizeAsync(model, calibration, new OnnxWeightQuantizationOptions { Embeddings = embeddings, MatMulNBits = new MatMulNBitsOptions() }),
            "dynamic W8A8" => OnnxDynamicQuantizer.Quantize(model, new OnnxDynamicQuantizationOptions { Embeddings = embeddings }).Weights,
            "static W8A8" => (await OnnxStaticQuantizer.QuantizeAsync(model, calibration, new OnnxStaticQuantizationOptions { Embeddings = embeddings })).Weights,
            _ => throw new ArgumentOutOfRangeException(nameof(recipe), recipe, null),
        };
        return (model.Proto.ToByteArray(), weights);
    }

    private float[][] Embed(byte[] bytes, GraphOptimizationLevel level)
    {
        using SessionOptions options = new() { GraphOptimizationLevel = level, IntraOpNumThreads = 1 };
        using InferenceSession session = new(bytes, options);
        return MiniLM.Embed(session, _tokenizer, _evaluation);
    }

    private double Report(string label, float[][] reference, float[][] embeddings)
    {
        double[] cosines = [.. embeddings.Select((e, i) => Cosine(reference[i], e))];
        output.WriteLine(FormattableString.Invariant($"MiniLM {label}: cosine mean {cosines.Average():F6}, worst {cosines.Min():F6}"));
        return cosines.Average();
    }
}
