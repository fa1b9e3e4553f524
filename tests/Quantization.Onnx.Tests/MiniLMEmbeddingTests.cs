using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Samples;

using Xunit.Abstractions;

namespace Quantization.Onnx.Tests;

/// <summary>
/// all-MiniLM-L6-v2's word embeddings (30522 × 384, 47 MB of the 90 MB file) quantized to int8 per row on top of the
/// library's recipes: the sentence embeddings (sentences 100 and later) move by no more than 0.0005 of mean cosine.
/// </summary>
public class MiniLMEmbeddingTests(ITestOutputHelper output)
{
    private readonly MiniLMEvaluation _evaluation = new(output);

    public static TheoryData<string> Recipes => ["weight-only QDQ", "weight-only MatMulNBits", "weight-only int4 MatMulNBits", "dynamic W8A8", "static W8A8"];

    [Theory]
    [MemberData(nameof(Recipes))]
    public async Task Int8Embeddings_KeepTheSentenceEmbeddings(string recipe)
    {
        byte[] original = MiniLM.LoadModel();
        float[][] reference = _evaluation.Embed(original, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        (byte[] floatTable, _) = await QuantizeAsync(original, recipe, embeddings: null);
        (byte[] int8Table, IReadOnlyList<OnnxWeightReport> weights) = await QuantizeAsync(original, recipe, new OnnxEmbeddingQuantizationOptions());

        OnnxWeightReport table = Assert.Single(weights, w => w.OpType == "Gather");
        Assert.Equal("embeddings.word_embeddings.weight", table.Weight);
        Assert.Single(OnnxModel.Parse(int8Table).Proto.Graph.Node, n => n.OpType == "GatherBlockQuantized");
        output.WriteLine(FormattableString.Invariant(
            $"MiniLM {recipe}: {original.Length:N0} bytes fp32, {floatTable.Length:N0} ({(double)floatTable.Length / original.Length:F3}x) with float embeddings, {int8Table.Length:N0} ({(double)int8Table.Length / original.Length:F3}x) with int8 embeddings (table SQNR {table.Report.SqnrDb:F1} dB)"));
        foreach (GraphOptimizationLevel level in new[] { GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_ALL })
        {
            double without = _evaluation.Report($"{recipe}, float embeddings, {level}", reference, _evaluation.Embed(floatTable, level)).Average();
            double with = _evaluation.Report($"{recipe}, int8 embeddings, {level}", reference, _evaluation.Embed(int8Table, level)).Average();
            Assert.True(Math.Abs(with - without) <= 0.0005, $"{recipe} at {level}: mean cosine {with} with int8 embeddings, {without} without");
        }
    }

    [Fact]
    public async Task Int4Weights_WithInt8OrInt4Embeddings_Sizes()
    {
        // The int4 issue's size bar (0.2x fp32 with int8 embeddings): int4 MatMulNBits weights in blocks of 32 (RTN,
        // accuracy level 1) with the word embeddings in float, int8 per row, and int4 in groups of 32 and 128.
        byte[] original = MiniLM.LoadModel();
        float[][] reference = _evaluation.Embed(original, GraphOptimizationLevel.ORT_ENABLE_BASIC);
        Dictionary<string, double> cosines = [], sizes = [];
        foreach ((string label, OnnxEmbeddingQuantizationOptions? embeddings) in new (string, OnnxEmbeddingQuantizationOptions?)[]
        {
            ("float", null),
            ("int8 per row", new()),
            ("int4 groups of 32", new() { Scheme = QuantizationScheme.Int4PerGroup(32) }),
            ("int4 groups of 128", new() { Scheme = QuantizationScheme.Int4PerGroup(128) }),
        })
        {
            (byte[] bytes, _) = await QuantizeAsync(original, "weight-only int4 MatMulNBits", embeddings);
            sizes[label] = (double)bytes.Length / original.Length;
            cosines[label] = _evaluation.Report(FormattableString.Invariant($"int4 weights, {label} embeddings ({bytes.Length:N0} bytes, {sizes[label]:F3}x fp32), basic level"), reference, _evaluation.Embed(bytes, GraphOptimizationLevel.ORT_ENABLE_BASIC)).Average();
        }

        Assert.True(Math.Abs(cosines["int8 per row"] - cosines["float"]) <= 0.0005, $"int8 embeddings move the mean cosine from {cosines["float"]} to {cosines["int8 per row"]}");
        Assert.True(sizes["int4 groups of 32"] < 0.2, $"int4 embeddings: {sizes["int4 groups of 32"]}x fp32");
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
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibration = _evaluation.Calibration;
        IReadOnlyList<OnnxWeightReport> weights = recipe switch
        {
            "weight-only QDQ" => await OnnxWeightQuantizer.QuantizeAsync(model, calibration, new OnnxWeightQuantizationOptions { Embeddings = embeddings }),
            "weight-only int4 MatMulNBits" => await OnnxWeightQuantizer.QuantizeAsync(model, calibration, new OnnxWeightQuantizationOptions { Embeddings = embeddings, Scheme = QuantizationScheme.Int4PerGroup(32), MatMulNBits = new MatMulNBitsOptions { AccuracyLevel = 1 } }),
            "weight-only MatMulNBits" => await OnnxWeightQuantizer.QuantizeAsync(model, calibration, new OnnxWeightQuantizationOptions { Embeddings = embeddings, MatMulNBits = new MatMulNBitsOptions() }),
            "dynamic W8A8" => OnnxDynamicQuantizer.Quantize(model, new OnnxDynamicQuantizationOptions { Embeddings = embeddings }).Weights,
            "static W8A8" => (await OnnxStaticQuantizer.QuantizeAsync(model, calibration, new OnnxStaticQuantizationOptions { Embeddings = embeddings })).Weights,
            _ => throw new ArgumentOutOfRangeException(nameof(recipe), recipe, null),
        };
        return (model.Proto.ToByteArray(), weights);
    }
}
