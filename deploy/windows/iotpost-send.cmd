@echo off
rem Task Scheduler runs this every 5 minutes (see README "Scheduling"); one send of one sensor reading.
rem read-sensor.exe is yours: it prints one JSON object per reading. py is the Python launcher.
rem Windows has no logrotate: the log is started afresh when it passes about 1 MB (the old one kept as .1).
setlocal
set LOG=%LOCALAPPDATA%\iotpost\iotpost.log
if not exist "%LOCALAPPDATA%\iotpost" mkdir "%LOCALAPPDATA%\iotpost"
for %%F in ("%LOG%") do if %%~zF GTR 1000000 move /y "%LOG%" "%LOG%.1" >nul
"C:\sensors\read-sensor.exe" | py -3 "C:\iotpost\iotpost.pyz" send --certs-dir "%USERPROFILE%\certs_credentials" --data-file - --spool "%LOCALAPPDATA%\iotpost\spool.sqlite3" --spool-max 20000 --jitter 60 --timestamps --quiet >> "%LOG%" 2>&1
exit /b %ERRORLEVEL%
