using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Onnx;
using Quantization.Samples;

namespace Quantization.Cli.Tests;

/// <summary><c>ptq quantize --calibration-data</c> on a model with several int64 inputs (all-MiniLM-L6-v2), from .npz batches.</summary>
public sealed class CalibrationDataCliTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("ptq-npz-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void DynamicMode_SmoothsABertModel_FromNpzFiles_WithExplicitScales()
    {
        string model = Path.Combine(_directory, "minilm.onnx"), output = Path.Combine(_directory, "dynamic.onnx"), data = Path.Combine(_directory, "data");
        File.WriteAllBytes(model, MiniLM.LoadModel());
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        Directory.CreateDirectory(data);
        IReadOnlyList<string> sentences = MiniLM.Sentences;
        for (int i = 0; i < 3; i++)
        {
            NpzWriter.Write(Path.Combine(data, $"{i}.npz"), Arrays(MiniLM.Feed(tokenizer, sentences[i])));
        }

        (int code, string stdout, string stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "dynamic", "--calibration-data", data, "--smoothquant", "auto", "--explicit-scales");
        Assert.True(code == 0, stderr);
        Assert.Contains("Dynamic W8A8: 38 weights", stdout, StringComparison.Ordinal); // 37 MatMul and Gemm weights and the word embeddings
        Assert.Contains("SmoothQuant: 25 groups smoothed, 0 left alone.", stdout, StringComparison.Ordinal); // 12 after the layer norms, 13 by an explicit Mul
        Assert.Contains("(ExplicitScale): alpha", stdout, StringComparison.Ordinal);
        Assert.Contains(OnnxModel.Load(output).Proto.Graph.Node, n => n.OpType == "MatMulInteger");

        using InferenceSession original = new(model), session = new(output);
        using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> expected = original.Run(MiniLM.Feed(tokenizer, sentences[3])), result = session.Run(MiniLM.Feed(tokenizer, sentences[3]));
        float[] e = [.. expected[0].AsTensor<float>()], a = [.. result[0].AsTensor<float>()];
        double cosine = e.Zip(a, (x, y) => (double)x * y).Sum() / Math.Sqrt(e.Sum(x => (double)x * x) * a.Sum(y => (double)y * y));
        Assert.True(cosine > 0.99, $"token embeddings: cosine {cosine}");
    }

    [Fact]
    public void StaticMode_CalibratesABertModel_FromNpzFiles()
    {
        string model = Path.Combine(_directory, "minilm.onnx"), output = Path.Combine(_directory, "out.onnx"), data = Path.Combine(_directory, "data");
        File.WriteAllBytes(model, MiniLM.LoadModel());
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        Directory.CreateDirectory(data);
        IReadOnlyList<string> sentences = MiniLM.Sentences;
        for (int i = 0; i < 3; i++)
        {
            NpzWriter.Write(Path.Combine(data, $"{i}.npz"), Arrays(MiniLM.Feed(tokenizer, sentences[i])));
        }

        (int code, string stdout, string stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data);
        Assert.True(code == 0, stderr);
        Assert.Contains("Static W8A8", stdout, StringComparison.Ordinal);
        using (InferenceSession session = new(output))
        {
            using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> result = session.Run(MiniLM.Feed(tokenizer, sentences[3]));
            Assert.All(result[0].AsTensor<float>(), v => Assert.True(float.IsFinite(v)));
        }

        // The transformer recipe: SmoothQuant with a searched alpha and a histogram observer; the summary reports both.
        (code, stdout, stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data, "--smoothquant", "auto", "--observer", "percentile", "--percentile", "99.99");
        Assert.True(code == 0, stderr);
        Assert.Contains("SmoothQuant: 12 groups smoothed", stdout, StringComparison.Ordinal);
        Assert.Contains("Static W8A8: 25 activations", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void StaticRules_KeepFloatAuto_ActivationOps_AndTheirErrors()
    {
        string model = Path.Combine(_directory, "matmul.onnx"), output = Path.Combine(_directory, "out.onnx"), data = Path.Combine(_directory, "data");
        Ptq.WriteMatMulModel(model);
        Directory.CreateDirectory(data);
        Random random = new(5);
        for (int i = 0; i < 4; i++)
        {
            NpyWriter.Write(Path.Combine(data, $"{i}.npy"), NumPyArray.Create<float>([.. Enumerable.Range(0, 32).Select(_ => (float)random.NextDouble())], 2, 16));
        }

        (int code, string stdout, string stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data, "--keep-float", "auto", "--target-cosine", "0.5");
        Assert.True(code == 0, stderr);
        Assert.Contains("Mixed precision on 4 calibration batches", stdout, StringComparison.Ordinal);
        Assert.Contains("Kept no layer in float.", stdout, StringComparison.Ordinal);
        Assert.Contains("Static W8A8: 1 activations", stdout, StringComparison.Ordinal);

        (code, stdout, stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data, "--keep-float", "matmul");
        Assert.True(code == 0, stderr);
        Assert.Contains("Static W8A8: 0 activations", stdout, StringComparison.Ordinal);

        (code, stdout, stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data, "--activation-ops", "Conv,Gemm");
        Assert.True(code == 0, stderr);
        Assert.Contains("Static W8A8: 0 activations", stdout, StringComparison.Ordinal);

        // GPTQ's errors speak the command line's words, not the library's.
        (code, _, stderr) = Ptq.Run("quantize", model, "-o", output, "--gptq");
        Assert.Equal(1, code);
        Assert.Contains("--algorithm gptq needs --calibration-data", stderr, StringComparison.Ordinal);
        (code, _, stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data, "--gptq");
        Assert.Equal(1, code);
        Assert.Contains("--mode static rounds weights to nearest", stderr, StringComparison.Ordinal);
        (code, stdout, stderr) = Ptq.Run("quantize", model, "-o", output, "--calibration-data", data, "--bits", "4", "--group-size", "16", "--algorithm", "gptq", "--range-search");
        Assert.True(code == 0, stderr);
        Assert.Contains(OnnxModel.Load(output).Proto.Graph.Node, n => n.OpType == "MatMulNBits" && n.Attribute.Single(a => a.Name == "bits").I == 4);
        (code, stdout, stderr) = Ptq.Run("quantize", model, "-o", output, "--calibration-data", data, "--bits", "4", "--group-size", "16", "--algorithm", "awq");
        Assert.True(code == 0, stderr);
        Assert.Contains(OnnxModel.Load(output).Proto.Graph.Node, n => n.OpType == "MatMulNBits");
        (code, _, stderr) = Ptq.Run("quantize", model, "-o", output, "--algorithm", "awq");
        Assert.Equal(1, code);
        Assert.Contains("--algorithm awq needs --calibration-data", stderr, StringComparison.Ordinal);
        (code, stdout, stderr) = Ptq.Run("quantize", model, "-o", output, "--calibration-data", data, "--gptq", "--stats");
        Assert.True(code == 0, stderr);
        Assert.Matches(@"stats: [0-9.]+ GB in [0-9.]+ s, peak resident memory [0-9]+ MB", stdout);

        (code, _, stderr) = Ptq.Run("quantize", model, "-o", output, "--observer", "mse");
        Assert.Equal(1, code);
        Assert.Contains("need --mode static", stderr, StringComparison.Ordinal);
        (code, _, stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data, "--keep-float", "auto", "--keep-float", "matmul");
        Assert.Equal(1, code);
        Assert.Contains("either 'auto' or node-name patterns", stderr, StringComparison.Ordinal);
        (code, _, stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data, "--smoothquant", "strong");
        Assert.Equal(1, code);
        Assert.Contains("alpha in [0, 1] or 'auto'", stderr, StringComparison.Ordinal);
        (code, _, stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data, "--keep-float", "matmul", "--target-cosine", "0.99");
        Assert.Equal(1, code);
        Assert.Contains("--target-cosine applies to --keep-float auto", stderr, StringComparison.Ordinal);
        (code, _, stderr) = Ptq.Run("quantize", model, "-o", output, "--percentile", "99.9");
        Assert.Equal(1, code);
        Assert.Contains("--percentile applies to --observer percentile", stderr, StringComparison.Ordinal);
        (code, _, stderr) = Ptq.Run("quantize", Path.Combine(_directory, "model.safetensors"), "-o", output, "--mode", "static");
        Assert.Equal(1, code);
        Assert.Contains("--mode applies to ONNX models", stderr, StringComparison.Ordinal);
        (code, _, stderr) = Ptq.Run("quantize", model, "-o", output, "--mode", "static", "--calibration-data", data, "--observer", "percentile", "--percentile", "150");
        Assert.Equal(1, code);
        Assert.Contains("ercentile", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void BatchWithoutAnInput_FailsNamingTheInputAndTheFile()
    {
        string model = Path.Combine(_directory, "minilm.onnx"), data = Path.Combine(_directory, "data");
        File.WriteAllBytes(model, MiniLM.LoadModel());
        Directory.CreateDirectory(data);
        Dictionary<string, NumPyArray> arrays = Arrays(MiniLM.Feed(MiniLM.LoadTokenizer(), "A short sentence."));
        arrays.Remove("token_type_ids");
        NpzWriter.Write(Path.Combine(data, "batch.npz"), arrays);

        (int code, string _, string stderr) = Ptq.Run("quantize", model, "-o", Path.Combine(_directory, "out.onnx"), "--mode", "static", "--calibration-data", data);
        Assert.Equal(1, code);
        Assert.StartsWith("error: ", stderr, StringComparison.Ordinal);
        Assert.Contains("batch.npz' has no array for the model input 'token_type_ids'", stderr, StringComparison.Ordinal);

        (code, string help, string _) = Ptq.Run("quantize", "--help");
        Assert.Equal(0, code);
        string words = string.Join(' ', help.Split((char[])[' ', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("one .npz file per batch (numpy.savez) with one array named after each model input", words, StringComparison.Ordinal);
        Assert.Contains("or one .npy file per batch for a model with a single input", words, StringComparison.Ordinal);
    }

    private static Dictionary<string, NumPyArray> Arrays(IReadOnlyCollection<NamedOnnxValue> feed) =>
        feed.ToDictionary(f => f.Name, f => NumPyArray.Create<long>(f.AsTensor<long>().ToArray(), [.. f.AsTensor<long>().Dimensions]));
}
